"""Statistics for comparing two training methods on the same eval items over a few seeds.

The unit of replication is the seed (what varies between runs), not the item: the same items
are scored under every seed, so pooling seeds x items as independent pairs overstates the
evidence. Two levels, reported side by side:
- within one seed, items are paired (same item, two adapters): exact McNemar;
- across seeds, one number per seed (the difference in accuracy): mean, a t interval with n-1
  degrees of freedom, and how many seeds went which way. With 3 seeds the interval is wide
  (t = 4.30) and no across-seed test can be sharp; that is the honest state of 3 seeds.
"""

import math
import statistics

# Two-sided 95% t quantiles by degrees of freedom (no scipy here).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mcnemar_p(a: list[bool], b: list[bool]) -> float:
    """Exact two-sided McNemar test on paired right/wrong flags (one seed)."""
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def across_seeds(differences: list[float]) -> dict:
    """``differences``: one (method - baseline) accuracy difference per seed."""
    n = len(differences)
    mean = statistics.mean(differences) if differences else 0.0
    sd = statistics.stdev(differences) if n > 1 else 0.0
    half = T95.get(n - 1, 1.96) * sd / math.sqrt(n) if n > 1 else None
    return {"n_seeds": n, "mean_diff": mean, "sd": sd,
            "ci95": None if half is None else [mean - half, mean + half],
            "better": sum(d > 0 for d in differences), "worse": sum(d < 0 for d in differences)}


def compare(method_flags: list[list[bool]], baseline_flags: list[list[bool]]) -> dict:
    """Per-seed lists of right/wrong flags (same items, same seed order) -> both levels."""
    per_seed = [{"diff": sum(a) / len(a) - sum(b) / len(b), "mcnemar_p": mcnemar_p(a, b)}
                for a, b in zip(method_flags, baseline_flags)]
    return {"per_seed": per_seed, "across_seeds": across_seeds([s["diff"] for s in per_seed])}


def describe(comparison: dict) -> str:
    """'+0.031 [-0.02, +0.08] 2/3 up, p per seed 0.21/0.04/0.5'."""
    across = comparison["across_seeds"]
    ci = across["ci95"]
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    ps = "/".join(f"{s['mcnemar_p']:.2g}" for s in comparison["per_seed"])
    return f"{across['mean_diff']:+.3f}{interval} {across['better']}/{across['n_seeds']} up, McNemar p {ps}"
