"""What a base-model upgrade needs from the workers, as protocols the server's workers
implement (``server/workers/``): migration code depends on these, never on the server, so the
layers point one way (adapters <- migration <- server)."""

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

from adapters.registry.models import BaseVersion


class EngineResponse(Protocol):
    status_code: int
    text: str

    def json(self) -> Any: ...


class EngineClient(Protocol):
    """OpenAI-style generation on one worker."""

    async def post(self, path: str, body: dict) -> EngineResponse: ...


class TrialWorker(Protocol):
    """One worker of one base version, used for a trial next to live traffic."""

    base_model_name: str
    """The model name under which the worker answers with no adapter."""

    @property
    def client(self) -> EngineClient: ...

    def request(self) -> AbstractContextManager[None]:
        """Counts as a request in flight (a retiring worker waits for it)."""

    def use_adapter(self, lora_name: str, path: Callable[[], Awaitable[str]]) -> AbstractAsyncContextManager[None]:
        """Holds the adapter loaded for the block; raises ``AdapterLoadError`` if the worker refuses it."""


class WorkerReconcilerPort(Protocol):
    async def reconcile(self) -> list[str]: ...

    async def ready(self, base: BaseVersion) -> None: ...

    def pick(self, base_ref: str, lora_name: str) -> TrialWorker:
        """The worker live traffic for this adapter would use."""


class MigrationMetrics(Protocol):
    migration_seconds: Any  # prometheus Histogram labelled by to_version
    migration_decisions: Any  # prometheus Counter labelled by from_version, to_version, decision
