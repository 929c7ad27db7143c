"""Shared pieces of the CLI commands: options, printing (text or one JSON object), admin calls."""

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from server.cli.admin_client import AdminApiError, AdminClient
from server.settings import Settings

console = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Gateway URL (default from settings).")]


def emit(as_json: bool, data: Any, text: str | Table) -> None:
    if as_json:
        print(json.dumps(data, default=str))
    else:
        console.print(text)


def fail(as_json: bool, message: str, status: int | None = None) -> None:
    if as_json:
        print(json.dumps({"error": {"message": message, "status": status}}))
    else:
        console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def admin_call(url: str | None, as_json: bool, method: str, path: str, **kwargs) -> Any:
    try:
        return AdminClient(Settings(), url).request(method, path, **kwargs)
    except AdminApiError as e:
        fail(as_json, str(e), e.status)


def make_table(title: str, rows: list[dict], columns: list[str]) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in columns))
    return table
