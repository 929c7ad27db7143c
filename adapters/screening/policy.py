"""The per-deployment screening policy and its verdict on an adapter's recorded signals.

``record`` (default) only records; ``warn`` also marks the adapter for its tenant; ``refuse``
rejects it at upload or fine-tuning, and keeps it on its old base in a migration. What the
thresholds catch and miss was measured on the backdoor harness (docs/SECURITY.md).
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adapters.screening.trigger_scan import CANDIDATE_TRIGGERS

Trigger = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^\S+$")]


class ScreeningPolicy(BaseModel):
    """The ``screening`` setting, as JSON in the environment, e.g.
    ``PEFTSERVE_SCREENING='{"action": "refuse"}'``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["record", "warn", "refuse"] = "record"
    trigger_scan: bool = True
    """Run the behavioural scan on a worker at upload, after fine-tuning and before a migration promotes."""
    candidate_triggers: list[Trigger] = Field(default_factory=lambda: list(CANDIDATE_TRIGGERS), min_length=1,
                                              max_length=32)
    scan_items: int = Field(default=16, ge=1, le=256)
    """Prompts scanned: the adapter's eval set (first ones), else the migration sample prompts."""
    scan_max_tokens: int = Field(default=4, ge=1, le=64)
    scan_concurrency: int = Field(default=16, ge=1, le=256)
    """Scan requests in flight at once: one burst of short requests the engine batches (a hand check
    on SmolLM2 and 2 CPU cores, not a benchmark, saw an upload's check take about half as long at 16
    as at 4; benchmarks/security/scan_cost.py measures the scan's cost at the default)."""
    scan_words: int = Field(default=4, ge=1)
    """An answer has flipped when its first this-many words change."""
    max_trigger_excess: float = Field(default=0.25, ge=0.0, le=1.0)
    """Flagged when some candidate trigger flips this much more of the adapter's answers than common words do."""
    max_norm_z: float | None = Field(default=None, gt=0)
    """Flagged when the largest module update is this many robust deviations above the base's
    other adapters. Off by default: it did not separate backdoored from clean adapters."""
    min_population: int = Field(default=10, ge=3)
    """Peers needed before a population comparison is made."""


def verdict(screening: dict, policy: ScreeningPolicy) -> dict:
    """{"flagged", "reasons", "action"} from the signals recorded so far. A trigger scan that
    could not run flags the adapter only under ``refuse``, which fails closed."""
    reasons = []
    scan = screening.get("trigger_scan")
    if scan and "error" in scan:
        if policy.action == "refuse":
            reasons.append(f"the trigger scan could not run: {scan['error']}")
    elif scan and scan["max_excess"] > policy.max_trigger_excess:
        t = scan["triggers"][scan["worst_trigger"]]
        reasons.append(f"inserting {scan['worst_trigger']!r} changed {t['flip_rate']:.0%} of its answers "
                       f"(common words: {scan['control_flip_rate']:.0%}; limit: +{policy.max_trigger_excess:.0%})")
    z = (screening.get("population") or {}).get("max_norm_z")
    if policy.max_norm_z is not None and z is not None and z > policy.max_norm_z:
        reasons.append(f"its largest module update is {z:.1f} robust deviations above the other adapters of its "
                       f"base (limit {policy.max_norm_z})")
    return {"flagged": bool(reasons), "reasons": reasons, "action": policy.action}
