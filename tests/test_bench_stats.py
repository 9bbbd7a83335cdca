"""benchmarks/stats.py, the rule every comparison page and every default decided by measurement rests on:
pinned against scipy's t distribution and against the published 5-seed figures recomputed by hand."""

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import stats  # noqa: E402


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 30, 31, 40, 60, 100, 1000])
def test_t_quantile_matches_scipy(df):
    t = pytest.importorskip("scipy.stats").t
    assert stats.t_quantile_975(df) == pytest.approx(float(t.ppf(0.975, df)), abs=1e-4)


def test_paired_comparison_is_the_t_interval_of_the_differences():
    t = pytest.importorskip("scipy.stats").t
    a = {"0": 85.79, "1": 82.73, "2": 81.17, "3": 81.48, "4": 80.22, "9": 50.0}  # seed 9: b has none
    b = {"0": 83.39, "1": 80.16, "2": 80.39, "3": 81.48, "4": 78.78}
    c = stats.paired_comparison(a, b)
    d = [a[s] - b[s] for s in "01234"]
    half = float(t.ppf(0.975, 4)) * statistics.stdev(d) / math.sqrt(5)
    assert c["n"] == 5 and c["seeds"] == list("01234") and c["diffs"] == pytest.approx(d)
    assert c["diff_mean"] == pytest.approx(statistics.fmean(d))
    assert c["ci95"] == pytest.approx([statistics.fmean(d) - half, statistics.fmean(d) + half], abs=1e-4)
    assert c["wins"] == 4 and c["verdict"] == "better"  # the published chex_fixed - chex: +1.44 [+0.09, +2.79]
    assert stats.describe(c) == "+1.44 pp [95% CI +0.09, +2.79], ahead in 4/5 seeds"


def test_verdicts():
    assert stats.paired_comparison({"0": 1.0}, {"1": 1.0}) is None
    single = stats.paired_comparison({"0": 2.0}, {"0": 1.0})
    assert single["verdict"] == "single seed" and single["ci95"] is None
    assert stats.paired_comparison({"0": 2, "1": 2.5, "2": 3}, {"0": 0, "1": 0, "2": 0})["verdict"] == "better"
    assert stats.paired_comparison({"0": 0, "1": 0, "2": 0}, {"0": 2, "1": 2.5, "2": 3})["verdict"] == "worse"
    # mean 2 but t(0.975, 2) * 1 / sqrt(3) = 2.48: the interval reaches below 0
    wide = stats.paired_comparison({"0": 1, "1": 2, "2": 3}, {"0": 0, "1": 0, "2": 0})
    assert wide["verdict"] == "no clear difference"
    undecided = stats.paired_comparison({"0": 3, "1": -1, "2": 1}, {"0": 0, "1": 0, "2": 0})
    assert undecided["verdict"] == "no clear difference" and undecided["ci95"][0] < 0 < undecided["ci95"][1]


def test_a_zero_width_interval_is_decided_and_said_to_be_zero_width():
    # one test image of 360 in each seed (digits), as the float top-1 values give it
    c = stats.paired_comparison({"0": 98.61, "1": 98.89, "2": 98.06}, {"0": 98.33, "1": 98.61, "2": 97.78})
    assert c["verdict"] == "better"  # the rule's verdict is unchanged; the description says what it rests on
    text = stats.describe(c)
    assert "zero-width interval" in text and text.startswith("+0.28 pp")
    assert "zero-width" not in stats.describe(stats.paired_comparison({"0": 1, "1": 3}, {"0": 0, "1": 0}))


def test_the_published_decisions_follow_from_their_per_seed_numbers():
    """The default `coupled: fixed` and the ablation's verdicts, recomputed from the result files' runs."""
    data = json.loads((ROOT / "docs" / "results" / "fmnist_chex_ablation_15ep.json").read_text())
    top1: dict[str, dict[str, float]] = {}
    for r in data["runs"]:
        top1.setdefault(r["plan_strategy"], {})[str(r["seed"])] = r["top1"]
    verdict = {s: stats.paired_comparison(top1[s], top1["chex"])["verdict"] for s in top1 if s not in ("chex", "dense")}
    assert verdict == {"chex_mean": "worse", "chex_max": "no clear difference", "chex_once": "better",
                       "chex_noregrow": "no clear difference", "chex_early": "no clear difference"}  # fmt: skip
    assert stats.paired_comparison(top1["chex_max"], top1["chex_mean"])["verdict"] == "better"
