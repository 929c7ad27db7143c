"""Shared pieces of the CLI commands: options, printing (text or one JSON object), admin calls."""

import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from server.cli.admin_client import AdminApiError, AdminClient
from server.settings import Settings

console = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Gateway URL (default from settings).")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column, whatever the terminal's width.")]
WIDE = 100_000  # a console this wide never narrows a table: lines are as long as the table needs


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


@dataclass(frozen=True)
class Col:
    """A table column. ``drop``: 0 = always shown; the highest numbers go first when the terminal
    is too narrow (``--wide`` keeps them all). ``wrap``: free text, folded onto more lines."""
    name: str
    drop: int = 0
    wrap: bool = False


WRAPPED_MIN = 24  # a wrapped column needs at least this much to stay readable
CELL_OVERHEAD = 3  # rich's default box: a border and one space either side per column


def fit_columns(columns: list[Col], rows: list[dict], width: int) -> list[Col]:
    """The columns that fit ``width``, dropping the most droppable (rightmost first) until they do."""
    def natural(c: Col) -> int:
        longest = max([len(c.name), *(len(str(r.get(c.name, ""))) for r in rows)])
        return min(longest, WRAPPED_MIN) if c.wrap else longest

    shown = list(columns)
    while sum(natural(c) + CELL_OVERHEAD for c in shown) + 1 > width:
        droppable = [c for c in shown if c.drop > 0]
        if not droppable:
            break
        shown.remove(max(reversed(droppable), key=lambda c: c.drop))
    return shown


def make_table(title: str, rows: list[dict], columns: list[str | Col], *, wide: bool = False,
               width: int | None = None) -> Table:
    """Columns chosen for ``width`` (the terminal's by default) unless ``wide``; the hidden ones are
    named under the table. Short values never wrap; ``Col(wrap=True)`` text folds."""
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    shown = cols if wide else fit_columns(cols, rows, width or console.width)
    hidden = [c.name for c in cols if c not in shown]
    table = Table(title=title, caption=f"not shown: {', '.join(hidden)} (--wide shows every column)" if hidden else None)
    for c in shown:
        table.add_column(c.name, overflow="fold", no_wrap=not c.wrap)
    for r in rows:
        table.add_row(*(str(r.get(c.name, "")) for c in shown))
    return table


def emit_table(as_json: bool, data: Any, table: Table, wide: bool) -> None:
    """``emit`` for a table made with ``wide``: printed at its full width."""
    if as_json or not wide:
        emit(as_json, data, table)
    else:
        Console(width=WIDE).print(table)
