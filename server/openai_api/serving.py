"""Serve one completion or chat request: resolve the model, hold its adapter resident on the
right worker, forward the request, and stream the answer back under the caller's names."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
from fastapi.responses import JSONResponse, StreamingResponse

from adapters.registry.models import Tenant
from adapters.registry.registry import Registry
from adapters.storage.materialize import AdapterMaterializer
from server.workers.pool import WorkerPool
from server.workers.worker_process import WORKER_BASE_NAME
from adapters.errors import (PeftServeError, WorkerRequestError, WorkerRetiredError, WorkerUnavailableError,
                             WorkerUnreachableError)
from server.metrics import GatewayMetrics
from server.openai_api.model_resolution import Target, resolve_model
from server.openai_api.protocol import WorkerBoundRequest
from server.openai_api.request_limits import RequestLimits, TenantConcurrency
from server.ttl_cache import TtlCache

log = logging.getLogger(__name__)


# Names the base version that served a response: after a base-model upgrade, clients and
# operators can tell which version answered.
BASE_VERSION_HEADER = "x-peftserve-base-version"


WORKER_HEADER = "x-peftserve-worker"
RESPONSES = "/v1/responses"
# A request for a version this gateway starts serving on the spot waits this long for a worker.
NEW_VERSION_WAIT_S = 10.0


class _WorkerDown(Exception):
    """The picked worker gave no answer (refused or dropped the connection) before any byte was relayed."""

    def __init__(self, slot, refused: bool):
        self.slot = slot
        self.refused = refused


class _AdapterGone(Exception):
    """The worker answered 404 for an adapter we believed resident (it restarted or evicted it)."""

    def __init__(self, slot):
        self.slot = slot


class OpenAIServing:
    def __init__(self, registry: Registry, pool: WorkerPool, materializer: AdapterMaterializer,
                 metrics: GatewayMetrics, resolutions: TtlCache[tuple[int, str], Target], limits: RequestLimits,
                 concurrency: TenantConcurrency):
        self.registry = registry
        self.limits = limits
        self.concurrency = concurrency
        self.pool = pool
        self.materializer = materializer
        self.metrics = metrics
        self._resolutions = resolutions

    def forget_resolutions(self) -> None:
        """Adapters changed (upload, delete): resolve model names afresh."""
        self._resolutions.clear()

    async def _resolve(self, tenant: Tenant, model: str, *, fresh: bool = False) -> Target:
        key = (tenant.id, model)
        target = None if fresh else self._resolutions.get(key)
        if target is None:
            generation = self._resolutions.generation
            target = await asyncio.to_thread(resolve_model, self.registry, tenant, model, self._is_served)
            self._resolutions.put(key, target, looked_up_in=generation)
        return target

    def _is_served(self, base_ref: str) -> bool:
        return self.pool.is_ready(base_ref)

    async def generate(self, tenant: Tenant, endpoint: str, request: WorkerBoundRequest):
        self.limits.check(request)
        release = self.concurrency.acquire(tenant.id)
        try:
            response = await self._generate(tenant, endpoint, request.model_dump(exclude_unset=True), release)
        except BaseException:
            release()
            raise
        if not isinstance(response, StreamingResponse):
            release()  # a stream gives its place back when it ends
        return response

    async def _generate(self, tenant: Tenant, endpoint: str, body: dict, release):
        # vLLM keys its prefix cache by this salt too: one tenant's prompts can never be cache
        # hits for another's, so time-to-first-token does not reveal what others asked.
        body["cache_salt"] = f"tenant-{tenant.id}"
        started = time.perf_counter()
        try:
            target = await self._resolve(tenant, body["model"])
            self.pool.check_served(target.base_ref)
        except WorkerRetiredError:
            # Resolved (maybe cached) before a migration moved the model off a retired worker; or
            # another gateway moved it to a version this one does not serve yet.
            target = await self._resolve(tenant, body["model"], fresh=True)
            if target.adapter is None and not self.pool.group(target.base_ref):
                raise WorkerUnavailableError(f"base model {target.base_ref} is not served now (no adapter uses it); "
                                             f"`{target.base.base_model.name}` names the newest version")
            await self.pool.ensure_ready(target.base, NEW_VERSION_WAIT_S)
        labels = self.metrics.labels(tenant.name, target.adapter_label, target.base_ref)
        self.metrics.requests.labels(**labels, endpoint=endpoint).inc()
        try:
            failed: frozenset[str] = frozenset()  # workers that gave no answer: the retry goes elsewhere
            for _ in range(3):
                try:
                    return await self._forward(target, endpoint, body, labels, started, failed, release)
                except _AdapterGone as gone:
                    gone.slot.residency.forget(target.lora_name)
                except _WorkerDown as down:  # no answer came: send it again, to another worker if one is ready
                    log.warning("worker %s %s; sending the request again", down.slot.name,
                                "refused the connection" if down.refused else "dropped the connection unanswered")
                    failed |= {down.slot.name}
                    if down.refused:
                        down.slot.worker.mark_unreachable()
            raise WorkerUnavailableError("the workers of this model failed this request three times; retry shortly")
        except PeftServeError as e:
            self.metrics.errors.labels(**labels, code=e.code).inc()
            raise

    async def _forward(self, target: Target, endpoint: str, body: dict, labels: dict, started: float,
                       avoid: frozenset[str], release):
        slot = self.pool.pick(target.base_ref, target.lora_name, avoid)
        worker_body = dict(body, model=target.lora_name or WORKER_BASE_NAME)
        stream = bool(body.get("stream"))
        responses_api = endpoint == RESPONSES
        # A Responses stream always ends with the whole response, usage included.
        client_wants_usage = responses_api or bool((body.get("stream_options") or {}).get("include_usage"))
        if responses_api:
            worker_body["store"] = False  # nothing is kept on a shared worker (vLLM ignores it anyway)
        elif stream:  # always ask for usage so token metrics are complete; dropped below if unasked
            worker_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}

        stack = AsyncExitStack()
        stack.enter_context(slot.request())  # before any await: a retiring worker waits for it
        headers = {BASE_VERSION_HEADER: target.base_ref, WORKER_HEADER: slot.name}
        try:
            if target.adapter is not None:
                await stack.enter_async_context(slot.residency.use(target.lora_name, self._adapter_path(target)))
            if not stream:
                resp = await slot.worker.client.post(endpoint, worker_body)
                self._raise_for_worker_error(resp.status_code, resp.text, target, slot)
                data = resp.json()
                _rename_model(data, target.public_name)
                self._count_usage(data.get("usage"), labels)
                self.metrics.latency.labels(**labels).observe(time.perf_counter() - started)
                await stack.aclose()
                return JSONResponse(data, headers=headers)
            resp = await stack.enter_async_context(slot.worker.client.stream(endpoint, worker_body))
            if resp.status_code != 200:
                self._raise_for_worker_error(resp.status_code, (await resp.aread()).decode(errors="replace"), target,
                                             slot)
        except WorkerUnreachableError as e:
            await stack.aclose()
            raise _WorkerDown(slot, e.refused) from None
        except BaseException:
            await stack.aclose()
            raise
        stack.callback(release)  # the tenant's place is held until the stream ends
        events = self._relay_stream(resp, stack, target, labels, started, client_wants_usage, responses_api)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    def _adapter_path(self, target: Target):
        async def path() -> str:
            return await asyncio.to_thread(self.materializer.for_worker, target.adapter)
        return path

    async def _relay_stream(self, resp: httpx.Response, stack: AsyncExitStack, target: Target, labels: dict,
                            started: float, client_wants_usage: bool, responses_api: bool) -> AsyncIterator[bytes]:
        first = True
        # Fast path: token chunks carry the worker's model name verbatim; swapping the string
        # avoids a JSON round trip per token. Chunks with usage (or any surprise) take the JSON path.
        worker_model = json.dumps(target.lora_name or WORKER_BASE_NAME)
        needle, replacement = f'"model":{worker_model}', f'"model":{json.dumps(target.public_name)}'
        try:
            async for line in resp.aiter_lines():
                if line.startswith("event: "):  # the Responses API names each event
                    yield f"{line}\n".encode()
                    continue
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    yield b"data: [DONE]\n\n"
                    continue
                if '"usage"' not in payload and needle in payload:
                    if first:
                        first = False
                        self.metrics.ttft.labels(**labels).observe(time.perf_counter() - started)
                    yield f"data: {payload.replace(needle, replacement, 1)}\n\n".encode()
                    continue
                chunk = json.loads(payload)
                _rename_model(chunk, target.public_name)
                usage = chunk.get("usage") or (chunk.get("response") or {}).get("usage")
                if usage:
                    self._count_usage(usage, labels)
                    if not client_wants_usage:
                        if not chunk.get("choices"):
                            continue
                        chunk.pop("usage")
                if first and (chunk.get("choices") or chunk.get("type") == "response.output_text.delta"):
                    first = False
                    self.metrics.ttft.labels(**labels).observe(time.perf_counter() - started)
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()
        except (WorkerUnavailableError, httpx.TransportError) as e:
            # Headers are already sent: tell the client in-band, in OpenAI's error shape.
            code = "worker_unavailable"
            self.metrics.errors.labels(**labels, code=code).inc()
            message = f"the worker stopped mid-stream ({type(e).__name__}); retry the request"
            if responses_api:  # the Responses API's error event
                yield f"event: error\ndata: {json.dumps({'type': 'error', 'code': code, 'message': message})}\n\n".encode()
            else:
                error = {"error": {"message": message, "type": "service_unavailable_error", "code": code}}
                yield f"data: {json.dumps(error)}\n\n".encode()
        finally:
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - started)
            await stack.aclose()

    def _raise_for_worker_error(self, status: int, text: str, target: Target, slot) -> None:
        if status == 200:
            return
        if status == 404 and target.adapter is not None:
            raise _AdapterGone(slot)
        message, param = _worker_error(text)
        if target.lora_name:  # never leak internal adapter names
            message = message.replace(target.lora_name, target.public_name)
        if status == 404:
            raise WorkerUnavailableError("the worker does not serve this base model right now; retry shortly")
        if 400 <= status < 500:
            raise WorkerRequestError(message, status_code=status, param=param)
        raise WorkerRequestError(f"the worker failed: {message}", status_code=502, code="worker_error")

    def _count_usage(self, usage: dict | None, labels: dict) -> None:
        if usage:  # chat/completions name them prompt/completion, the Responses API input/output
            self.metrics.prompt_tokens.labels(**labels).inc(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            self.metrics.generated_tokens.labels(**labels).inc(
                usage.get("completion_tokens") or usage.get("output_tokens") or 0)


def _rename_model(body: dict, public_name: str) -> None:
    """The caller's model name wherever the worker wrote its own: at the top (completions, chat,
    a whole response) or in a Responses event's ``response``."""
    if "model" in body:
        body["model"] = public_name
    if isinstance(body.get("response"), dict) and "model" in body["response"]:
        body["response"]["model"] = public_name


def _worker_error(text: str) -> tuple[str, str | None]:
    """(message, param) of a worker's OpenAI-style error body."""
    try:
        error = json.loads(text)["error"]
        return str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):
        return text[:500] or "no details", None
