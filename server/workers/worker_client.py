"""HTTP client for one vLLM OpenAI-server worker (the only code that speaks vLLM's API)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from adapters.errors import AdapterLoadError, WorkerUnavailableError, WorkerUnreachableError

TRANSPORT_ERRORS = (httpx.TransportError,)
# No answer came: refused, or the connection was closed or reset before any response (the
# worker died, possibly with our request in it). Generation has no side effects, so these are
# safe to send again; a timeout is not among them (the worker may still be working on it).
DROPPED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)




class WorkerClient:
    def __init__(self, name: str, url: str, *, timeout_s: float, api_key: str | None = None):
        self.name = name
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=5.0),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/health", timeout=5.0)).status_code == 200
        except TRANSPORT_ERRORS:
            return False

    async def load_lora(self, lora_name: str, path: str) -> None:
        resp = await self._call("POST", "/v1/load_lora_adapter", {"lora_name": lora_name, "lora_path": path})
        if resp.status_code == 400 and "already been loaded" in resp.text:
            return  # our view was stale (e.g. after a gateway restart): it is resident, fine
        if resp.status_code != 200:
            raise AdapterLoadError(f"worker {self.name} could not load {lora_name}: {resp.status_code} {resp.text}",
                                   status_code=resp.status_code)

    async def unload_lora(self, lora_name: str) -> None:
        resp = await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": lora_name})
        if resp.status_code not in (200, 404):
            raise AdapterLoadError(f"worker {self.name} could not unload {lora_name}: {resp.status_code} {resp.text}",
                                   status_code=resp.status_code)

    async def loaded_loras(self) -> set[str]:
        resp = await self._call("GET", "/v1/models")
        return {m["id"] for m in resp.json()["data"] if m.get("parent")}

    async def post(self, path: str, body: dict) -> httpx.Response:
        return await self._call("POST", path, body)

    @asynccontextmanager
    async def stream(self, path: str, body: dict) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream("POST", path, json=body) as resp:
                yield resp
        except DROPPED as e:
            raise _unreachable(self.name, e) from e
        except TRANSPORT_ERRORS as e:
            raise WorkerUnavailableError(f"worker for this model is unavailable ({type(e).__name__}); retry shortly") from e

    async def _call(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        try:
            return await self._http.request(method, path, json=body)
        except DROPPED as e:
            raise _unreachable(self.name, e) from e
        except TRANSPORT_ERRORS as e:
            raise WorkerUnavailableError(f"worker for this model is unavailable ({type(e).__name__}); retry shortly") from e


def _unreachable(name: str, e: Exception) -> WorkerUnreachableError:
    """Refused, or a connection the worker closed or reset before answering (it went away, or
    timed a kept-alive connection out): either way no answer came, so the request can be sent
    again."""
    refused = isinstance(e, httpx.ConnectError)
    what = "refused the connection" if refused else "closed the connection without answering"
    return WorkerUnreachableError(f"worker {name} {what}", refused=refused)
