"""Authenticate from the headers before any body is read.

FastAPI resolves a route's body before its dependencies run, so without this an unauthenticated
client could make the gateway read (and spool to disk) a whole upload, or parse a 64 MiB JSON
body, only to answer 401 afterwards. This ASGI middleware answers 401 for ``/v1/`` and
``/admin/`` from the Authorization header alone and hands the tenant it found to the routes'
dependencies (request.state), which check the key themselves only if it did not run.
"""

from starlette.datastructures import Headers

from server.deps import Services, check_admin_headers, tenant_for_headers
from adapters.errors import AuthenticationError
from server.errors import error_response


class AuthenticateFirst:
    def __init__(self, app, *, services: Services):
        self.app = app
        self.services = services

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        try:
            if path == "/admin" or path.startswith("/admin/"):
                check_admin_headers(Headers(scope=scope), self.services)
            elif path.startswith("/v1/"):
                tenant = await tenant_for_headers(Headers(scope=scope), self.services)
                scope.setdefault("state", {})["tenant"] = tenant  # the route's dependency takes it from here
        except AuthenticationError as e:
            response = error_response(e)
            response.headers["connection"] = "close"  # the unread body must not become the next request
            return await response(scope, receive, send)
        await self.app(scope, receive, send)
