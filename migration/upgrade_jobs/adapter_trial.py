"""Try one adapter on the new base version and judge it: the candidate is the same LoRA weights
(direct transfer), checked statically against the new version, loaded on its worker, then
compared with the adapter on the old version and with the bare new version."""

import asyncio
from dataclasses import dataclass, replace

from adapters.format.eval_set import EvalItem, parse_eval_set
from adapters.registry.models import Adapter, BaseVersion
from adapters.storage.blob_store import BlobStore
from adapters.storage.materialize import AdapterMaterializer
from adapters.validation.static_check import check_statically
from migration.worker_port import TrialWorker
from migration.validation_gate.eval_runner import generate_outputs
from migration.validation_gate.gate import GateDecision, GateThresholds, decide, measure
from migration.validation_gate.worker_scan import scan_on_worker
from adapters.screening.policy import ScreeningPolicy, verdict
from adapters.errors import AdapterLoadError
from adapters.errors import AdapterInvalidError, WorkerRequestError


@dataclass(frozen=True)
class TrialSettings:
    sample_prompts: list[str]
    max_tokens: int
    max_items: int
    concurrency: int
    max_rank: int
    served_targets: frozenset[str]
    screening: ScreeningPolicy = ScreeningPolicy()


def eval_items_of(adapter: Adapter, blobs: BlobStore, sample_prompts: list[str],
                  max_items: int) -> tuple[list[EvalItem], bool]:
    """The adapter's eval set (first ``max_items``), or the sample prompts; (items, has_expected)."""
    if adapter.eval_set_sha256:
        with blobs.open(adapter.eval_set_sha256) as f:
            return parse_eval_set(f.read())[:max_items], True
    return [EvalItem(messages=[{"role": "user", "content": p}], expected="-") for p in sample_prompts], False


class TrialFailed(Exception):
    """The trial could not judge the adapter (a worker's own failure): not the adapter's fault."""


def incompatible(reason: str) -> GateDecision:
    return GateDecision("incompatible", None, [reason])


async def try_adapter(adapter: Adapter, new_version: BaseVersion, old: TrialWorker, new: TrialWorker, *,
                      blobs: BlobStore, materializer: AdapterMaterializer, thresholds: GateThresholds,
                      settings: TrialSettings) -> GateDecision:
    folder = await asyncio.to_thread(materializer.folder_for, adapter)
    try:  # the same checks an upload gets, against the new version's architecture
        check_statically((folder / "adapter_config.json").read_bytes(), folder / "adapter_model.safetensors",
                         new_version.architecture, max_rank=settings.max_rank, served_targets=settings.served_targets)
    except AdapterInvalidError as e:
        return incompatible(f"does not fit {new_version.ref}: {e.message}")
    try:
        items, has_expected = await asyncio.to_thread(eval_items_of, adapter, blobs, settings.sample_prompts,
                                                      settings.max_items)
    except AdapterInvalidError as e:  # stored before today's checks: judge this adapter, not the job
        return incompatible(f"its eval set cannot be used: {e.message}")

    async def path() -> str:
        return await asyncio.to_thread(materializer.for_worker, adapter)  # the folder is built already

    async def run(slot: TrialWorker, model: str) -> list[str]:
        return await generate_outputs(slot.client, model, items, max_tokens=settings.max_tokens,
                                      concurrency=settings.concurrency)

    async def with_adapter(slot: TrialWorker) -> list[str]:
        with slot.request():
            async with slot.use_adapter(adapter.lora_name, path):
                return await run(slot, adapter.lora_name)

    try:
        candidate = await with_adapter(new)
    except AdapterLoadError as e:  # the new version's worker refuses to load it
        if e.internal:
            raise TrialFailed(f"the worker of {new_version.ref} failed loading it: "
                              + str(e).replace(adapter.lora_name, adapter.name)) from e  # no internal names
        return incompatible(f"the worker of {new_version.ref} refused it: "
                            + str(e).replace(adapter.lora_name, adapter.name))
    except WorkerRequestError as e:  # ... or to run it
        if e.status_code >= 500:
            raise TrialFailed(f"the worker of {new_version.ref} failed running it: {e.message}") from e
        return incompatible(f"the worker of {new_version.ref} cannot run it: {e.message}")
    reference = await with_adapter(old)
    expected = [i.expected for i in items] if has_expected else None
    floor = None
    if has_expected:
        with new.request():
            floor = await run(new, new.base_model_name)
    evidence = measure(reference, candidate, floor_outputs=floor, expected=expected,
                       mode=adapter.eval_scoring or "exact_match", confidence=thresholds.retention_confidence or 0.95)
    decision = decide(evidence, thresholds)
    if decision.decision != "migrated" or not settings.screening.trigger_scan:
        return decision
    return await screened(decision, adapter, new_version, new, items, path, settings)


async def screened(decision: GateDecision, adapter: Adapter, new_version: BaseVersion, new: TrialWorker,
                   items: list[EvalItem], path, settings: TrialSettings) -> GateDecision:
    """Before promoting: the trigger scan on the new version (its behaviour there is what will be
    served); under a ``refuse`` policy a flagged adapter, or one the scan cannot run on, stays."""
    policy = settings.screening
    try:
        async with new.use_adapter(adapter.lora_name, path):
            scan = await scan_on_worker(new, adapter.lora_name, items, policy)
    except WorkerRequestError as e:
        if e.status_code >= 500:
            raise TrialFailed(f"the worker of {new_version.ref} failed during the trigger scan: {e.message}") from e
        scan = {"error": e.message.replace(adapter.lora_name, adapter.name)}  # no internal names
    screening = {"stage": f"migration to {new_version.ref}", "trigger_scan": scan}
    screening["verdict"] = verdict(screening, policy)
    if screening["verdict"]["flagged"] and policy.action == "refuse":
        return replace(decision, decision="kept_on_old", screening=screening,
                       reasons=[*decision.reasons, *("screening: " + r for r in screening["verdict"]["reasons"])])
    return replace(decision, screening=screening)

