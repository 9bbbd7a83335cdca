"""benchmarks/fmnist_accuracy.py --reuse: a run of another result file is taken only when it is the same run
(seed, target, result settings, strategy and its effective parameters), whatever label it had there; a file
made under other settings is refused with the setting named."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fmnist_accuracy as fa  # noqa: E402

BASE = {"epochs": 15, "train_subset": 5000, "test_subset": None, "config": "configs/fashion_mnist_resnet20.yaml",
        "quick": False, "device": "auto"}  # fmt: skip
# the 5-seed comparison as published: written before chex_coupled was recorded (so CHEX ranked by the mean)
OLD = {**BASE, "variants": {"chex_fixed": "chex", "magnitude_half": "magnitude"},
       "params": ["chex_fixed.coupled=fixed", "magnitude_half.at=0.5"]}  # fmt: skip
NEW = {**BASE, "chex_coupled": "fixed", "variants": {"chex_mean": "chex", "chex_max": "chex", "chex_once": "chex"},
       "params": ["chex_mean.coupled=mean", "chex_max.coupled=max", "chex_once.explore=false"]}  # fmt: skip


def row(label, seed, target=0.7, status="ok", top1=80.0):
    return {"strategy": "dense" if target is None else label, "plan_strategy": label, "seed": seed,
            "target_reduction": target, "status": status, "top1": top1, "wall_s": 1.0}  # fmt: skip


def test_identity_is_the_strategy_and_its_effective_parameters_not_the_label():
    assert fa.run_identity(OLD, "chex_fixed") == fa.run_identity(NEW, "chex")  # fixed: a variant there, default here
    assert fa.run_identity(OLD, "chex") == fa.run_identity(NEW, "chex_mean")  # files without the setting: mean
    assert fa.run_identity(OLD, "chex") != fa.run_identity(NEW, "chex")
    assert fa.run_identity(NEW, "chex_max") not in {fa.run_identity(OLD, s) for s in ("chex", "chex_fixed")}
    assert fa.run_identity(NEW, "chex_once") != fa.run_identity(NEW, "chex")
    assert fa.run_identity(OLD, "magnitude_half") != fa.run_identity(OLD, "magnitude")
    assert fa.run_identity(OLD, "dense") == fa.run_identity(NEW, "dense")


def test_reuse_relabels_the_same_runs_and_leaves_the_others_to_run(tmp_path):
    runs = [row("dense", 0, None, top1=85.0), row("chex", 0, top1=81.0), row("chex_fixed", 0, top1=83.0),
            row("magnitude_half", 0), row("chex", 1, status="failed", top1=None), row("chex_fixed", 1, top1=82.0),
            row("chex_fixed", 0, target=0.5)]  # fmt: skip
    path = tmp_path / "five.json"
    path.write_text(json.dumps({"settings": OLD, "runs": runs}))
    plan = [(s, label, None if label == "dense" else 0.7) for s in (0, 1)
            for label in ("dense", "chex", "chex_mean", "chex_max", "chex_once")]  # fmt: skip
    rows, source = fa.reusable_runs(path, NEW, plan)
    assert source == {"machine": None, "started": None}  # what the file records (nothing here)
    got = {(r["seed"], r["plan_strategy"]): r for r in rows}
    assert sorted(got) == [(0, "chex"), (0, "chex_mean"), (0, "dense"), (1, "chex")]  # seed 1's chex failed there
    assert got[(0, "chex")]["top1"] == 83.0 and got[(0, "chex")]["strategy"] == "chex"
    assert got[(0, "chex")]["reused_from"] == "five.json:chex_fixed"
    assert got[(0, "chex_mean")]["top1"] == 81.0 and got[(0, "chex_mean")]["reused_from"] == "five.json:chex"
    assert got[(0, "dense")]["strategy"] == "dense" and got[(1, "chex")]["top1"] == 82.0


def test_reuse_refuses_a_file_made_under_other_settings(tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"settings": {**OLD, "test_subset": 2000}, "runs": [row("chex_fixed", 0)]}))
    with pytest.raises(SystemExit) as e:
        fa.reusable_runs(path, NEW, [(0, "chex", 0.7)])
    assert "test_subset: 2000 there, None here" in str(e.value)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a readable result file"):
        fa.reusable_runs(tmp_path / "bad.json", NEW, [(0, "chex", 0.7)])
