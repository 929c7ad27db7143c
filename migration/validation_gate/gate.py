"""The validation gate of a base-model migration: compare an adapter on the old base
(reference), the bare new base (floor) and the adapter on the new base (candidate), and decide.

- retention = candidate / reference, with a one-sided lower confidence bound from the paired
  items (a 40-item eval set at 50% accuracy cannot tell 75% retention from 95%: the upgrade
  benchmark measured it); judged on the bound instead of the estimate when
  ``retention_confidence`` is set
- gain kept = (candidate - floor) / (reference - floor): the check that catches a transfer that
  silently does nothing and still scores like the bare base
- negative-flip rate: share of items right on the old base and wrong on the new one
- agreement: share of items where candidate and reference outputs are identical; the only
  evidence when the adapter has no eval set (and marked as weaker)
"""

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict, Field


class GateThresholds(BaseModel):
    """Defaults of the ``migration_gate`` setting; a migration job may override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_retention: float = Field(default=0.9, ge=0.0)
    """Candidate must keep at least this share of the reference score."""
    min_gain_kept: float = Field(default=0.5, ge=0.0)
    """Candidate must keep at least this share of the adapter's gain over the bare base."""
    max_negative_flip_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    """At most this share of items may go from right to wrong."""
    min_agreement_without_eval: float = Field(default=0.8, ge=0.0, le=1.0)
    """Without an eval set: share of prompts where the new output must equal the old one."""
    min_gain: float = Field(default=0.05, ge=0.0, le=1.0)
    """Below this reference - floor gap the adapter shows no measurable gain; gain kept is not judged."""
    retention_confidence: float | None = Field(default=None, gt=0.5, lt=1.0)
    """Judge retention by its one-sided lower confidence bound at this level (e.g. 0.95) instead of
    its estimate: an eval set too small or too noisy to show the bar is met then keeps the adapter
    on the old base (fewer wrong migrations, more cautious ones). Off by default: the estimate."""


@dataclass(frozen=True)
class GateEvidence:
    kind: str  # "eval_set" or "agreement_only" (weaker)
    items: int
    reference: float | None = None
    floor: float | None = None
    candidate: float | None = None
    retention: float | None = None
    retention_lower: float | None = None  # one-sided lower confidence bound at ``confidence``
    confidence: float | None = None
    gain_kept: float | None = None
    negative_flip_rate: float | None = None
    agreement: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    decision: str  # "migrated", "kept_on_old" or "incompatible"
    evidence: GateEvidence | None
    reasons: list[str] = field(default_factory=list)
    screening: dict | None = None  # the trigger scan before promotion (adapters/screening/), when it ran


def score(outputs: list[str], expected: list[str], mode: str) -> list[bool]:
    if mode == "exact_match":
        return [o.strip() == e.strip() for o, e in zip(outputs, expected, strict=True)]
    if mode == "contains":
        return [e.strip().casefold() in o.casefold() for o, e in zip(outputs, expected, strict=True)]
    raise ValueError(f"unknown scoring mode {mode!r}")


def _mean(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def retention_lower_bound(reference: list[bool], candidate: list[bool], confidence: float) -> float | None:
    """One-sided lower confidence bound on sum(candidate) / sum(reference) over paired items: the
    ratio estimator's delta-method standard error, from how far each item's candidate result is
    from ``ratio`` times its reference result (0 on items both get right or both get wrong)."""
    n, right = len(reference), sum(reference)
    if n < 2 or right == 0:
        return None
    ratio = sum(candidate) / right
    residual_var = sum((c - ratio * r) ** 2 for r, c in zip(reference, candidate)) / (n - 1)
    standard_error = math.sqrt(residual_var / n) / (right / n)
    return max(0.0, ratio - NormalDist().inv_cdf(confidence) * standard_error)


def measure(reference_outputs: list[str], candidate_outputs: list[str], *, floor_outputs: list[str] | None = None,
            expected: list[str] | None = None, mode: str = "exact_match", confidence: float = 0.95) -> GateEvidence:
    agreement = _mean([a == b for a, b in zip(reference_outputs, candidate_outputs, strict=True)])
    if expected is None:
        return GateEvidence("agreement_only", len(reference_outputs), agreement=agreement)
    ref = score(reference_outputs, expected, mode)
    cand = score(candidate_outputs, expected, mode)
    floor = score(floor_outputs, expected, mode)
    reference, candidate, floor_score = _mean(ref), _mean(cand), _mean(floor)
    gap = reference - floor_score
    return GateEvidence(
        "eval_set", len(expected), reference=reference, floor=floor_score, candidate=candidate,
        retention=candidate / reference if reference else None,
        retention_lower=retention_lower_bound(ref, cand, confidence), confidence=confidence,
        gain_kept=(candidate - floor_score) / gap if gap > 0 else None,
        negative_flip_rate=_mean([r and not c for r, c in zip(ref, cand)]), agreement=agreement)


def decide(evidence: GateEvidence, t: GateThresholds) -> GateDecision:
    reasons = []
    if evidence.kind == "agreement_only":
        if evidence.agreement < t.min_agreement_without_eval:
            reasons.append(f"agreement with the old base {evidence.agreement:.1%} < {t.min_agreement_without_eval:.0%} "
                           "(no eval set: weaker evidence)")
    else:
        if evidence.retention is None:  # the adapter got nothing right on the old base: nothing to retain
            pass
        elif evidence.retention < t.min_retention:
            reasons.append(f"retention {evidence.retention:.1%} < {t.min_retention:.0%}")
        elif t.retention_confidence is not None and (evidence.retention_lower or 0.0) < t.min_retention:
            bound = "none" if evidence.retention_lower is None else f"{evidence.retention_lower:.1%}"
            reasons.append(f"retention {evidence.retention:.1%} is not shown to be >= {t.min_retention:.0%}: "
                           f"its {evidence.confidence:.0%} lower bound is {bound} on {evidence.items} eval items "
                           "(a larger eval set narrows it)")
        if evidence.reference - evidence.floor >= t.min_gain and evidence.gain_kept < t.min_gain_kept:
            reasons.append(f"gain kept {evidence.gain_kept:.1%} < {t.min_gain_kept:.0%} (candidate "
                           f"{evidence.candidate:.1%} vs bare new base {evidence.floor:.1%})")
        if evidence.negative_flip_rate > t.max_negative_flip_rate:
            reasons.append(f"negative flips {evidence.negative_flip_rate:.1%} > {t.max_negative_flip_rate:.0%}")
    return GateDecision("kept_on_old" if reasons else "migrated", evidence, reasons)
