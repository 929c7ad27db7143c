"""The ``peftserve`` command line: one file per command group (this one assembles them). Every
command takes ``--json`` and then prints one JSON object."""

import typer

from server.cli.adapters import adapter_app
from server.cli.bases import base_app
from server.cli.blobs import blobs_app
from server.cli.keys import key_app
from server.cli.migrate import migrate_app
from server.cli.serve import serve
from server.cli.tenants import tenant_app
from server.cli.train import train
from server.cli.workers import workers

app = typer.Typer(help="Multi-tenant LoRA adapter server on a shared vLLM base model.", no_args_is_help=True)
app.command()(serve)
app.add_typer(base_app, name="base")
app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
app.add_typer(adapter_app, name="adapter")
app.command()(train)
app.command()(workers)
app.add_typer(migrate_app, name="migrate")
app.add_typer(blobs_app, name="blobs")


if __name__ == "__main__":
    app()
