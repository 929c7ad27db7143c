"""Typed domain errors. Code in every layer raises a subclass of ``PeftServeError``; the
server maps each class to an HTTP status and OpenAI's error body in one table
(``server/errors.py``). Nothing here knows about HTTP frameworks, so the parsers of untrusted
files can raise them without importing FastAPI.
"""


class PeftServeError(Exception):
    """Base of every error the API reports on purpose. ``retryable``: whether the same request may
    succeed later (told to clients, whose retry logic otherwise guesses from the status); None = no advice."""

    code: str = "error"
    retryable: bool | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class AuthenticationError(PeftServeError):
    code = "invalid_api_key"


class PermissionDeniedError(PeftServeError):
    code = "permission_denied"


class NotFoundError(PeftServeError):
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """Unknown model, or one owned by another tenant: both answer the same on purpose."""

    code = "model_not_found"


class InvalidRequestError(PeftServeError):
    code = "invalid_request"


class ConflictError(PeftServeError):
    """A name taken, a job in the wrong state: asking again changes nothing unless said otherwise."""

    code = "conflict"
    retryable = False


class AdapterInvalidError(PeftServeError):
    """An adapter failed validation against its base model; ``code`` names the rule."""

    code = "adapter_invalid"


class PayloadTooLargeError(PeftServeError):
    code = "payload_too_large"


class UnsupportedMediaTypeError(PeftServeError):
    code = "unsupported_media_type"


class QuotaExceededError(PeftServeError):
    """A tenant's stored adapters or bytes are at their limit: not a rate, so never worth retrying."""

    code = "insufficient_quota"
    retryable = False


class RateLimitError(PeftServeError):
    """Too much at once (requests in flight); retrying later succeeds."""

    retryable = True


class WorkerUnavailableError(PeftServeError):
    """No healthy worker serves the base version right now (starting, restarting or down)."""

    code = "worker_unavailable"


class WorkerRetiredError(WorkerUnavailableError):
    """The base version a request resolved to is no longer served here (its worker retired
    after a migration); resolving the model again finds where it is served now."""


class WorkerUnreachableError(WorkerUnavailableError):
    """A worker refused the connection, or dropped it before answering: the request may be
    sent again (to another worker of the same base version when ``refused``)."""

    def __init__(self, message: str, *, refused: bool):
        super().__init__(message)
        self.refused = refused


class WorkerRequestError(PeftServeError):
    """The worker rejected a request as the client's fault; its status is passed on."""

    code = "invalid_request"

    def __init__(self, message: str, *, status_code: int, code: str | None = None, param: str | None = None):
        super().__init__(message, code=code, param=param)
        self.status_code = status_code


class AdapterLoadError(Exception):
    """The worker did not load an adapter. ``status_code`` is the worker's answer: a 4xx means it
    refused this adapter; a 5xx (or None: no answer) is the worker's own failure, which must never
    be recorded as the adapter's fault."""

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code

    @property
    def internal(self) -> bool:
        return self.status_code is None or self.status_code >= 500
