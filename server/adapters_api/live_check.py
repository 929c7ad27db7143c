"""The last gate before ``ready``: load the adapter on a worker of its base and generate a few
tokens. Adapters whose check could not run (worker down, server crashed mid-check) are
picked up again in the background until it can."""

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from adapters.registration import AdapterRegistration
from adapters.screening.policy import ScreeningPolicy, verdict
from migration.upgrade_jobs.adapter_trial import eval_items_of
from migration.validation_gate.worker_scan import scan_on_worker
from adapters.registry.models import Adapter, AdapterStatus, utcnow
from adapters.registry.adapter_repository import AdapterRepository
from adapters.storage.materialize import AdapterMaterializer
from server.workers.pool import WorkerPool
from adapters.errors import AdapterLoadError
from server.workers.worker_process import WorkerState
from adapters.errors import WorkerRequestError, WorkerUnavailableError

log = logging.getLogger(__name__)
PROBE = {"prompt": "Hello", "max_tokens": 4, "temperature": 0}
PENDING = (AdapterStatus.received, AdapterStatus.validating)  # a check may (re)start from these
REMOVE_WAIT_S = 60.0
MAX_INTERNAL_FAILURES = 5  # worker failures (5xx, no answer) while checking one adapter before giving up


@dataclass(frozen=True)
class LiveScreening:
    """The trigger scan at the end of the live check (adapters/screening/)."""
    policy: ScreeningPolicy
    sample_prompts: list[str]  # scanned when the adapter has no eval set


class LiveCheck:
    def __init__(self, registry: AdapterRepository, pool: WorkerPool, materializer: AdapterMaterializer,
                 registration: AdapterRegistration, startup_timeout_s: float, *, lease_s: float = 300.0,
                 screening: LiveScreening = LiveScreening(ScreeningPolicy(), ["Hello"])):
        self.registry = registry
        self.startup_timeout_s = startup_timeout_s
        self.pool = pool
        self.materializer = materializer
        self.registration = registration
        self._pending: asyncio.Task | None = None
        self.lease_s = lease_s  # a check untouched this long may be claimed again
        self._internal_failures: dict[int, int] = {}  # adapter id -> worker failures while checking it
        self.screening = screening

    async def run(self, adapter: Adapter) -> Adapter:
        """Return the adapter as ``ready`` or ``rejected``; raise WorkerUnavailableError if no
        worker can run the check now (the adapter then stays ``received``)."""
        group = self.pool.ensure(adapter.base_version)
        if all(s.worker.state == WorkerState.starting for s in group):  # e.g. first adapter on an old version
            waits = [asyncio.create_task(s.worker.wait_ready(self.startup_timeout_s)) for s in group]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
        try:
            slot = self.pool.pick(adapter.base_version.ref, adapter.lora_name)
        except WorkerUnavailableError:
            waiting = await asyncio.to_thread(self.registry.transition, adapter.id, AdapterStatus.received,
                                              "waiting for a worker to run the live check", expect=PENDING)
            if waiting is None:
                return await asyncio.to_thread(self.registry.get_adapter, adapter.id)  # deleted or finished elsewhere
            self.schedule_pending()
            raise
        validating = await asyncio.to_thread(self.registry.transition, adapter.id, AdapterStatus.validating,
                                             expect=PENDING)
        if validating is None:
            return await asyncio.to_thread(self.registry.get_adapter, adapter.id)
        try:
            async def path() -> str:
                return await asyncio.to_thread(self.materializer.for_worker, adapter)

            with slot.request():
                async with slot.residency.use(adapter.lora_name, path):
                    resp = await slot.worker.client.post("/v1/completions", {"model": adapter.lora_name, **PROBE})
                    if resp.status_code == 404:  # the worker lost it (restarted, or a delete elsewhere): not its fault
                        slot.residency.forget(adapter.lora_name)
                        raise AdapterLoadError("the worker no longer knew the adapter during the check",
                                               status_code=None)
                    if resp.status_code != 200 or not resp.json()["usage"]["completion_tokens"]:
                        raise AdapterLoadError(f"generation failed: {resp.status_code} {resp.text[:300]}",
                                               status_code=resp.status_code)
                    screening = await self._screen(adapter, slot)
        except AdapterLoadError as e:
            if e.internal:  # the worker's failure, not the adapter's: check again later
                return await self._internal_failure(adapter, e)
            return await self._reject(adapter, f"live check failed on {adapter.base_version.ref}: {e}")
        await asyncio.to_thread(self.registry.record_screening, adapter.id, screening)
        if screening["verdict"]["flagged"]:
            self.pool.metrics.screening_flagged.labels(screening.get("stage", "upload"),
                                                       self.screening.policy.action).inc()
            log.warning("screening flagged adapter %s (%s/%s): %s", adapter.id, adapter.tenant.name, adapter.name,
                        "; ".join(screening["verdict"]["reasons"]))
            if self.screening.policy.action == "refuse":
                return await self._reject(adapter, "refused by the backdoor screening: "
                                          + "; ".join(screening["verdict"]["reasons"]))
        ready = await asyncio.to_thread(self.registry.transition, adapter.id, AdapterStatus.ready,
                                        expect=(AdapterStatus.validating,))
        if ready is not None:
            return ready
        now = await asyncio.to_thread(self.registry.get_adapter, adapter.id)  # deleted, or finished elsewhere
        if now.status == AdapterStatus.deleted:  # it must not stay loaded either
            try:
                await slot.residency.remove(adapter.lora_name, REMOVE_WAIT_S)
            except WorkerUnavailableError:
                pass
        return now

    async def _reject(self, adapter: Adapter, reason: str) -> Adapter:
        rejected = await asyncio.to_thread(self.registry.transition, adapter.id, AdapterStatus.rejected, reason,
                                           expect=(AdapterStatus.validating,))
        if rejected is None:  # deleted meanwhile: the delete released what it held
            return await asyncio.to_thread(self.registry.get_adapter, adapter.id)
        await asyncio.to_thread(self.registration.release_blobs, rejected)
        return rejected

    async def _screen(self, adapter: Adapter, slot) -> dict:
        """The recorded weight signals plus the trigger scan (the adapter is resident on ``slot``),
        and the policy's verdict. A scan that cannot run is recorded; ``refuse`` then refuses."""
        policy = self.screening.policy
        screening = dict(adapter.screening or {})
        if policy.trigger_scan:
            try:
                items, _ = await asyncio.to_thread(eval_items_of, adapter, self.registration.blobs,
                                                   self.screening.sample_prompts, policy.scan_items)
                screening["trigger_scan"] = await scan_on_worker(slot, adapter.lora_name, items, policy)
            except WorkerRequestError as e:
                if e.status_code >= 500:  # the worker's failure: check again later
                    raise AdapterLoadError(f"the trigger scan failed: {e.message}", status_code=e.status_code) from e
                screening["trigger_scan"] = {"error": e.message.replace(adapter.lora_name, adapter.name)}
        screening["verdict"] = verdict(screening, policy)
        return screening

    async def _internal_failure(self, adapter: Adapter, error: AdapterLoadError) -> Adapter:
        failures = self._internal_failures[adapter.id] = self._internal_failures.get(adapter.id, 0) + 1
        gave_up = failures >= MAX_INTERNAL_FAILURES
        reason = (f"the worker failed while checking it ({failures} times; "
                  + ("not retried until the gateway restarts" if gave_up else "retried") + f"): {error}")
        waiting = await asyncio.to_thread(self.registry.transition, adapter.id, AdapterStatus.received,
                                          reason.replace(adapter.lora_name, adapter.name), expect=PENDING)
        if waiting is None:
            return await asyncio.to_thread(self.registry.get_adapter, adapter.id)
        log.warning("live check of adapter %s: %s", adapter.id, reason)
        if not gave_up:
            self.schedule_pending()
        raise WorkerUnavailableError("the worker failed while checking this adapter; it is checked again shortly")

    async def keep_finishing(self, interval_s: float) -> None:
        """Now and then look for pending checks (another gateway may have died holding some)."""
        while True:
            await asyncio.sleep(interval_s)
            self.schedule_pending()

    def schedule_pending(self) -> None:
        """Finish checks that could not run, once their workers are up (idempotent)."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._finish_pending(), name="pending live checks")

    async def _finish_pending(self) -> None:
        while True:
            pending = [a for a in await asyncio.to_thread(self.registry.adapters_in, AdapterStatus.received,
                                                          AdapterStatus.validating)
                       if self._internal_failures.get(a.id, 0) < MAX_INTERNAL_FAILURES]
            if not pending:
                return
            stale_before = utcnow() - timedelta(seconds=self.lease_s)
            for adapter in pending:
                self.pool.ensure(adapter.base_version)  # starts its workers if none serve it yet
                if not self.pool.is_ready(adapter.base_version.ref):
                    continue  # claim only what can run now: a claim is a lease of lease_s
                claimed = await asyncio.to_thread(self.registry.claim_check, adapter.id, stale_before)
                if claimed is None:
                    continue  # another gateway (or this one's upload request) is checking it
                try:
                    await self.run(claimed)
                except WorkerUnavailableError:
                    pass
                except Exception:  # one broken adapter must not stop the others' checks
                    log.exception("live check of adapter %s crashed", adapter.id)
            await asyncio.sleep(2)

    async def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
