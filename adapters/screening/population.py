"""How an adapter's weight signals compare with the other adapters of the same base version: a
robust z-score (median and MAD, so the outliers being looked for do not hide themselves by
inflating a standard deviation)."""

import statistics

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x this = its standard deviation


def robust_z(value: float, peers: list[float], *, min_peers: int) -> float | None:
    """(value - median) / (1.4826 * MAD) over ``peers``; None with fewer than ``min_peers`` or no spread."""
    if len(peers) < min_peers:
        return None
    median = statistics.median(peers)
    mad = statistics.median(abs(p - median) for p in peers)
    return (value - median) / (MAD_TO_SIGMA * mad) if mad > 0 else None


def population_signals(weights: dict, peers: list[dict], *, min_peers: int) -> dict:
    """``weights``: this adapter's weight_signals(); ``peers``: the others' on the same base."""
    z = robust_z(weights["max_norm"], [p["max_norm"] for p in peers if "max_norm" in p], min_peers=min_peers)
    return {"peers": len(peers), "max_norm_z": z}
