"""The behavioural trigger scan (adapters/screening/trigger_scan.py) on a worker that holds the
adapter: run at the end of an upload's live check and before a migration promotes an adapter."""

from adapters.format.eval_set import EvalItem
from adapters.screening.policy import ScreeningPolicy
from adapters.screening.trigger_scan import scan
from migration.worker_port import TrialWorker
from migration.validation_gate.eval_runner import generate_outputs


async def scan_on_worker(worker: TrialWorker, lora_name: str, items: list[EvalItem], policy: ScreeningPolicy) -> dict:
    """The caller holds ``lora_name`` loaded on ``worker``; raises WorkerRequestError as the eval does."""

    async def generate(batch: list[EvalItem]) -> list[str]:
        with worker.request():
            return await generate_outputs(worker.client, lora_name, batch, max_tokens=policy.scan_max_tokens,
                                          concurrency=policy.scan_concurrency)

    return await scan(generate, items[:policy.scan_items], policy.candidate_triggers, words=policy.scan_words)
