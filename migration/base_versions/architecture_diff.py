"""What differs between two base architectures, for a clear refusal when a "new version" is
not the same architecture (and so cannot take the old version's adapters)."""

from adapters.format.base_architecture import BaseArchitecture

MAX_LISTED = 10


def architecture_differences(old: BaseArchitecture, new: BaseArchitecture) -> list[str]:
    """Human-readable differences; empty when the two take the same adapters."""
    diffs = []
    if old.model_type != new.model_type:
        diffs.append(f"model_type {old.model_type!r} -> {new.model_type!r}")
    missing = sorted(set(old.weights) - set(new.weights))
    added = sorted(set(new.weights) - set(old.weights))
    reshaped = sorted(k for k in set(old.weights) & set(new.weights) if old.weights[k] != new.weights[k])
    if missing:
        diffs.append(f"{len(missing)} weight(s) missing, e.g. {', '.join(missing[:MAX_LISTED])}")
    if added:
        diffs.append(f"{len(added)} new weight(s), e.g. {', '.join(added[:MAX_LISTED])}")
    for k in reshaped[:MAX_LISTED]:
        diffs.append(f"{k}: shape {list(old.weights[k])} -> {list(new.weights[k])}")
    if len(reshaped) > MAX_LISTED:
        diffs.append(f"... and {len(reshaped) - MAX_LISTED} more reshaped weight(s)")
    return diffs
