"""The CLI's HTTP client for the gateway's admin API."""

from pathlib import Path

import httpx

from server.admin_key import admin_key_path
from server.settings import Settings


class AdminApiError(Exception):
    def __init__(self, status: int, body: dict | str):
        self.status = status
        self.body = body
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")


class AdminClient:
    def __init__(self, settings: Settings, url: str | None = None):
        key = settings.admin_key or _read_key(admin_key_path(settings))
        self.url = url or f"http://{settings.host}:{settings.port}"
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=600)

    def request(self, method: str, path: str, **kwargs) -> dict | list:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise AdminApiError(0, f"cannot reach the gateway at {self.url} ({e}); is `peftserve serve` running?")
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise AdminApiError(resp.status_code, body)
        return body


def _read_key(path: Path) -> str:
    if not path.is_file():
        raise AdminApiError(0, f"no admin key: set PEFTSERVE_ADMIN_KEY or start the server once ({path} is missing)")
    return path.read_text().strip()
