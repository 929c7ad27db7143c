"""The ONE table that maps the domain errors (``adapters/errors.py``) to HTTP status and
OpenAI error bodies, and the FastAPI handlers that use it. Unknown exceptions are internal
errors (500) and are never reported as client errors.
"""

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import (
    PeftServeError, AuthenticationError, PermissionDeniedError, NotFoundError, ModelNotFoundError,
    InvalidRequestError, ConflictError, AdapterInvalidError, PayloadTooLargeError, UnsupportedMediaTypeError,
    QuotaExceededError, RateLimitError, WorkerUnavailableError, WorkerRetiredError, WorkerUnreachableError,
    WorkerRequestError)

log = logging.getLogger(__name__)


# (HTTP status, OpenAI error ``type``) per error class; the most specific class wins.
ERROR_TABLE: dict[type[PeftServeError], tuple[int, str]] = {
    AuthenticationError: (401, "authentication_error"),
    PermissionDeniedError: (403, "permission_error"),
    NotFoundError: (404, "invalid_request_error"),
    ModelNotFoundError: (404, "invalid_request_error"),
    InvalidRequestError: (400, "invalid_request_error"),
    ConflictError: (409, "invalid_request_error"),
    AdapterInvalidError: (422, "invalid_request_error"),
    PayloadTooLargeError: (413, "invalid_request_error"),
    UnsupportedMediaTypeError: (415, "invalid_request_error"),
    QuotaExceededError: (429, "insufficient_quota"),  # OpenAI's type for an exhausted quota
    RateLimitError: (429, "rate_limit_error"),
    WorkerUnavailableError: (503, "service_unavailable_error"),
    WorkerRequestError: (400, "invalid_request_error"),
}


def status_for(error: PeftServeError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            status, kind = ERROR_TABLE[cls]
            if isinstance(error, WorkerRequestError):
                status = error.status_code
            return status, kind
    return 500, "server_error"


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(error: PeftServeError) -> JSONResponse:
    status, kind = status_for(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if error.retryable is not None:  # the openai client obeys it before guessing from the status (429, 409: retry)
        headers["x-should-retry"] = "true" if error.retryable else "false"
    return JSONResponse(
        error_body(error.message, kind, error.code, error.param), status_code=status, headers=headers
    )


def install_error_handlers(app, on_internal_error=lambda request: None) -> None:
    """``on_internal_error(request)`` is called for every unhandled error (the app counts them)."""
    async def on_domain_error(_: Request, exc: PeftServeError) -> JSONResponse:
        return error_response(exc)

    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        what = first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":  # e.g. a vLLM-only field the gateway does not pass on
            what = "unsupported parameter (see the README for the parameters peftserve accepts)"
        message = f"{where}: {what}" if where else "invalid request"
        return JSONResponse(
            error_body(message, "invalid_request_error", "invalid_request", where or None),
            status_code=400,
        )

    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, bodies the framework cannot parse: OpenAI's shape too.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(exc.detail), kind, code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        on_internal_error(request)
        return JSONResponse(
            error_body("internal server error", "server_error", "internal_error"), status_code=500
        )

    app.add_exception_handler(PeftServeError, on_domain_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
