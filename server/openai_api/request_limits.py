"""Bounds on the engine work one request, and one tenant at a time, may ask of a shared worker."""

import threading
from dataclasses import dataclass

from adapters.errors import InvalidRequestError, RateLimitError
from server.openai_api.protocol import WorkerBoundRequest


@dataclass(frozen=True)
class RequestLimits:
    max_choices: int
    """prompts x n: sequences one request may start (n=1000 kept a worker busy for 26 s)."""
    max_generated_tokens: int
    """prompts x n x max_tokens, with an unset max_tokens counted as the worker's context length."""
    context_tokens: int

    def check(self, request: WorkerBoundRequest) -> None:
        choices = request.choices
        if choices > self.max_choices:
            raise InvalidRequestError(f"this request asks for {choices} completions (prompts x n); at most "
                                      f"{self.max_choices} per request", param="n", code="too_many_choices")
        tokens = choices * (request.token_limit or self.context_tokens)
        if tokens > self.max_generated_tokens:
            param = request.token_param
            raise InvalidRequestError(
                f"this request may generate {tokens} tokens (prompts x n x {param}, an unset {param} counting as "
                f"the context length {self.context_tokens}); at most {self.max_generated_tokens} per request",
                param=param, code="too_many_tokens")


class TenantConcurrency:
    """Requests in flight per tenant on this gateway; one more than the limit is refused with 429
    (OpenAI's clients retry that with back-off). Gateways count separately."""

    def __init__(self, limit: int):
        self.limit = limit
        self._in_flight: dict[int, int] = {}
        self._lock = threading.Lock()

    def in_flight(self, tenant_id: int) -> int:
        return self._in_flight.get(tenant_id, 0)

    def acquire(self, tenant_id: int) -> "Release":
        with self._lock:
            count = self._in_flight.get(tenant_id, 0)
            if count >= self.limit:
                raise RateLimitError(f"this API key's tenant has {count} requests in flight, the most allowed at "
                                     f"once on this gateway; retry when one has finished",
                                     code="too_many_concurrent_requests")
            self._in_flight[tenant_id] = count + 1
        return Release(self, tenant_id)

    def _release(self, tenant_id: int) -> None:
        with self._lock:
            count = self._in_flight[tenant_id] - 1
            if count:
                self._in_flight[tenant_id] = count
            else:
                del self._in_flight[tenant_id]


class Release:
    """Gives one acquired place back, once, however many times it is called (a streamed answer
    releases when its stream ends, an error path may release first)."""

    def __init__(self, owner: TenantConcurrency, tenant_id: int):
        self._owner = owner
        self._tenant_id = tenant_id
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._owner._release(self._tenant_id)
