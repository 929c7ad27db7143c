"""The uvicorn configuration of a gateway, shared by ``peftserve serve`` and the tests."""

import uvicorn

from server.connection_guard import ConnectionLimits, guarded_protocol
from server.settings import Settings


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes, max_header_count=settings.max_header_count,
        max_pending_connections=settings.max_pending_connections)


def uvicorn_config(app, settings: Settings, **overrides) -> uvicorn.Config:
    values = dict(host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log,
                  timeout_keep_alive=settings.keep_alive_s, http=guarded_protocol(connection_limits(settings)),
                  lifespan="on")
    values.update(overrides)
    return uvicorn.Config(app, **values)
