"""``peftserve serve``: the gateway and its supervised workers."""

from typing import Annotated

import typer

from server.cli.command_output import console
from server.settings import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
) -> None:
    """Start the gateway and one supervised vLLM worker per served base version."""
    import uvicorn

    from server.app import create_app
    from server.admin_key import admin_key_path
    from server.http_server import uvicorn_config

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)
    application = create_app(settings)
    key_hint = "PEFTSERVE_ADMIN_KEY" if settings.admin_key else admin_key_path(settings)
    console.print(f"peftserve on http://{settings.host}:{settings.port} (admin key: {key_hint})")
    uvicorn.Server(uvicorn_config(application, settings)).run()
