"""The web console at /console: static files (no build step) that use only the public REST API
with the key the user signs in with, kept in the tab's session storage. Strict headers: the
page runs only its own scripts, and every string from the API is inserted as text, never HTML
(tenant-controlled names and eval lines must not run: tests/test_console.py)."""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/console/")


@router.get("/console/{name:path}")
async def console_file(name: str) -> FileResponse:
    name = name or "index.html"
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or path.suffix not in TYPES or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)
