"""The one statistical rule of every comparison page: a paired difference and its 95% t-interval.

    from stats import RULE, paired_comparison
    c = paired_comparison({"0": 81.2, "1": 80.1}, {"0": 82.0, "1": 81.5})   # per-seed top-1 of a and b
    c["verdict"]     # "better" | "worse" | "no clear difference" | "single seed"

For the seeds both strategies finished, d_i = a_i - b_i (same seed: same initial weights and data order).
With n >= 2 seeds, mean d, sample standard deviation s and the 95% t-interval
mean +- t_{0.975, n-1} s / sqrt(n): "better" when the whole interval is above 0, "worse" when it is below 0,
otherwise "no clear difference" (the interval contains 0: the data cannot tell which is ahead). One seed
decides nothing. ``RULE`` is the sentence the result pages print; it states exactly this code.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

RULE = (
    "Rule (benchmarks/stats.py, the same for every comparison): for two strategies a and b and the seeds both "
    "finished, take the paired difference d = a - b of each seed (same initial weights and data order), its "
    "mean and the 95% t-interval mean ± t(0.975, n-1)·s/√n (s: standard deviation of the d, n: seeds). a is "
    "**ahead of** b when the whole interval is above 0, **behind** when it is below 0, and otherwise there is "
    "**no clear difference**: the interval contains 0, and the data cannot decide which is ahead. One seed "
    "decides nothing."
)

# two-sided 95%: t_{0.975, df} for df = 1..30
_T975 = [
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
]  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table up to 30 degrees of freedom, Cornish-Fisher beyond (error < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_comparison(a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
    """Paired difference a - b over the seeds both have (``{seed: value}``), with the 95% t-interval and
    the verdict of ``RULE``; None when they share no seed."""
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    out: dict[str, Any] = {
        "n": n,
        "seeds": seeds,
        "diffs": diffs,
        "diff_mean": mean,
        "diff_std": None,
        "ci95": None,
        "wins": sum(d > 0 for d in diffs),
        "verdict": "single seed",
    }
    if n < 2:
        return out
    sd = statistics.stdev(diffs)
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    out.update(diff_std=sd, ci95=[lo, hi])
    out["verdict"] = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
    return out


def describe(c: dict[str, Any], unit: str = "pp") -> str:
    """``+1.23 pp [95% CI -0.40, +2.86], ahead in 3/5 seeds`` for a ``paired_comparison`` result."""
    text = f"{c['diff_mean']:+.2f} {unit}"
    if c["ci95"] is not None:
        text += f" [95% CI {c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
    text += f", ahead in {c['wins']}/{c['n']} seeds"
    if c["diff_std"] is not None and c["diff_std"] < 1e-9:  # the t-interval collapses to a point: say why
        text += " (the same difference in every seed: a zero-width interval; on a small test set, maybe one image)"
    return text
