"""The benchmark scripts run end to end (their --quick modes, in a subprocess, into a temporary folder) and
write the Markdown and JSON they promise. The default suite runs the cheap ones; the ones that train or time
for a minute or more are marked slow (``make test-all``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, out: Path, *extra: str, rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == rc, f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_graph_build_quick(tmp_path):
    pytest.importorskip("torch_pruning")
    run_script("graph_build.py", tmp_path)
    data = json.loads((tmp_path / "graph_build.json").read_text())
    assert {"machine", "command", "results"} <= set(data)
    assert data["machine"]["torch"] and data["machine"]["torch_pruning"]
    rows = data["results"]
    assert [r["model"] for r in rows] == ["resnet18", "mobilenet_v2"]
    for r in rows:
        assert len(r["ours_s"]) == len(r["tp_s"]) == 2
        assert r["ours_median_s"] > 0 and r["tp_median_s"] > 0
        assert r["ratio"] == pytest.approx(r["ours_median_s"] / r["tp_median_s"])
    md = (tmp_path / "graph_build.md").read_text()
    assert "| resnet18 |" in md and "ratio" in md and "--quick" in md


@pytest.mark.slow  # every zoo model traced: about a minute; make test-all runs it
def test_zoo_coverage_quick(tmp_path):
    pytest.importorskip("torch_pruning")
    run_script("zoo_coverage.py", tmp_path)
    data = json.loads((tmp_path / "zoo_coverage.json").read_text())
    assert data["complete"] is True
    rows = {r["model"]: r for r in data["results"]}
    assert set(rows) == {"resnet18", "mobilenet_v2", "shufflenet_v2_x0_5"}
    for r in rows.values():
        assert "error" not in r, r
        assert r["rel_error"] <= 1e-4 and r["shape_ok"] and r["macs_pruned"] < r["macs_dense"]
        assert r["groups"] > 0
    assert rows["resnet18"]["tp_builds"] and rows["resnet18"]["tp_identical"]
    # Torch-Pruning cannot build ShuffleNetV2; we can
    assert rows["shufflenet_v2_x0_5"]["tp_builds"] is False
    md = (tmp_path / "zoo_coverage.md").read_text()
    assert "| shufflenet_v2_x0_5 |" in md


@pytest.mark.slow  # trains a grid of runs twice (--resume): two minutes or more; make test-all runs it
def test_fmnist_accuracy_quick(tmp_path):
    pytest.importorskip("torch_pruning")
    from prunekit.data import FASHION_FILES, FASHION_MNIST_ROOT, find_idx

    if not all(find_idx(FASHION_MNIST_ROOT, stem) for stem in FASHION_FILES.values()):
        pytest.skip(f"Fashion-MNIST IDX files not in {FASHION_MNIST_ROOT} (Debian: dataset-fashion-mnist)")
    run_script(
        "fmnist_accuracy.py", tmp_path, "--runs-dir", str(tmp_path / "runs"), "--jobs", "2", "--name", "fm",
        "--variant", "chex_once=chex", "--param", "chex_once.explore=false",
    )  # fmt: skip
    data = json.loads((tmp_path / "fm.json").read_text())
    assert {"machine", "command", "settings", "runs", "summary", "findings"} <= set(data)
    assert data["complete"] is True and data["machine"]["torch_pruning"]
    assert data["settings"]["epochs"] == 1 and data["settings"]["seeds"] == [0]
    assert data["settings"]["train_subset"] == 2000 and data["settings"]["targets"] == [0.5]
    runs = data["runs"]
    strategies = ["chex", "magnitude", "random", "tp_magnitude", "tp_bnscale", "chex_once"]
    assert [r["strategy"] for r in runs] == ["dense", *strategies]  # in plan order, though run two at a time
    once = yaml.safe_load((tmp_path / "runs" / "chex_once-r50-seed0" / "config.yaml").read_text())
    assert once["prune"]["strategy"] == "chex" and once["prune"]["params"] == {"explore": False}
    assert runs[-1]["num_events"] == 1  # a variant runs its base strategy with its own parameters
    for r in runs:
        assert r["status"] == "ok", r
        assert 0 <= r["top1"] <= 100 and r["wall_s"] > 0
    for r in runs[1:]:  # every strategy at the same MACs: the target within 1%
        assert abs((1 - r["macs_reduction"]) - 0.5) <= 0.005, r
    per = data["summary"]["targets"]["0.5"]
    assert set(per) == set(strategies)
    assert all(v["n"] == 1 and v["delta_dense_mean"] is not None for v in per.values())
    md = (tmp_path / "fm.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["fm.json", "fm.md"]
    assert "| tp_bnscale |" in md and "## What we found" in md and "--quick" in md

    # --resume: an interrupted benchmark (one run missing, one failed) runs only those two again
    extra = ["--runs-dir", str(tmp_path / "runs2"), "--name", "fm", "--variant", "chex_once=chex",
             "--param", "chex_once.explore=false"]  # fmt: skip
    cut = dict(data, complete=False, runs=[*runs[:-2], dict(runs[-2], status="failed", top1=None)])
    (tmp_path / "fm.json").write_text(json.dumps(cut))
    proc = run_script("fmnist_accuracy.py", tmp_path, *extra, "--resume")
    assert "5 finished run(s) kept, 2 to run" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "runs2").iterdir()) == ["chex_once-r50-seed0", "tp_bnscale-r50-seed0"]
    resumed = json.loads((tmp_path / "fm.json").read_text())
    assert resumed["complete"] is True and [r["strategy"] for r in resumed["runs"]] == ["dense", *strategies]
    assert resumed["runs"][:5] == runs[:5] and all(r["status"] == "ok" for r in resumed["runs"])
    assert "Resumed: 5 run(s) kept" in (tmp_path / "fm.md").read_text()
    # other settings would mix two experiments: refused, naming the setting, the file left as it was
    proc = run_script("fmnist_accuracy.py", tmp_path, *extra, "--resume", "--epochs", "2", rc=1)
    assert "epochs: was 1, now 2" in proc.stderr
    assert json.loads((tmp_path / "fm.json").read_text()) == resumed
    # --reuse: an ablation under other labels takes the runs fm.json holds and trains only the new one
    proc = run_script(
        "fmnist_accuracy.py", tmp_path, "--runs-dir", str(tmp_path / "runs3"), "--name", "abl", "--strategies",
        "chex", "--variant", "no_explore=chex", "--param", "no_explore.explore=false", "--variant",
        "few_events=chex", "--param", "few_events.delta_T=4", "--reuse", str(tmp_path / "fm.json"),
    )  # fmt: skip
    assert "3 run(s) taken from" in proc.stdout and "1 to run" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "runs3").iterdir()) == ["few_events-r50-seed0"]
    abl = json.loads((tmp_path / "abl.json").read_text())
    assert abl["complete"] is True and [r["strategy"] for r in abl["runs"]] == ["dense", "chex", "no_explore",
                                                                                 "few_events"]  # fmt: skip
    assert abl["runs"][2]["top1"] == runs[-1]["top1"] and abl["runs"][2]["reused_from"] == "fm.json:chex_once"
    assert "Reused: 3 run(s) taken from `fm.json`" in (tmp_path / "abl.md").read_text()


@pytest.mark.slow  # slims and times ResNet-scale models: about a minute; make test-all runs it
def test_speedup_quick(tmp_path):
    run_script("speedup.py", tmp_path)
    data = json.loads((tmp_path / "speedup.json").read_text())
    assert {"machine", "command", "settings", "target", "results"} <= set(data)
    assert data["machine"]["torch"] and data["machine"]["torch_threads"] == data["settings"]["threads"] == 2
    assert data["target"]["met"] is None  # the quick run has no ResNet-50
    rows = data["results"]
    assert sorted({r["model"] for r in rows}) == ["resnet18", "resnet20"]
    assert {(r["model"], r["round_to"], r["batch"]) for r in rows} == {
        (m, rt, b) for m in ("resnet18", "resnet20") for rt in (1, 8) for b in (1, 4)
    }
    for r in rows:
        assert len(r["dense_runs_ms"]) == len(r["slim_runs_ms"]) == 2
        assert r["dense_ms"] > 0 and r["slim_ms"] > 0
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["slim_ms"])
        assert r["ideal_speedup"] == pytest.approx(r["macs_dense"] / r["macs_slim"])
        assert r["fraction_of_ideal"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
        assert r["macs_ok"] and r["macs_fraction"] == pytest.approx(0.5, rel=0.01)
        assert r["rel_error"] <= 1e-4
    md = (tmp_path / "speedup.md").read_text()
    assert "| resnet18 | 64x64 | 8 | 4 |" in md and "of ideal" in md and "--quick" in md
    # onnxruntime: the dense model and each slimmed variant exported (checked) and timed, interleaved
    onnx = data["onnx_results"]
    assert {(r["model"], r["round_to"], r["batch"]) for r in onnx} == {
        ("resnet20", rt, b) for rt in (1, 8) for b in (1, 4)
    }
    for r in onnx:
        assert r["max_abs_diff_dense"] <= 1e-4 and r["max_abs_diff_slim"] <= 1e-4
        assert len(r["dense_runs_ms"]) == len(r["slim_runs_ms"]) == 2
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["slim_ms"])
    assert "## ONNX Runtime" in md and "| resnet20 | 32x32 | 8 | 4 |" in md


@pytest.mark.slow  # trains one run per ablation variant: about a minute; make test-all runs it
def test_chex_ablation_quick(tmp_path):
    run_script("chex_ablation.py", tmp_path)
    data = json.loads((tmp_path / "chex_ablation.json").read_text())
    assert data["settings"]["epochs"] == 2 and data["settings"]["seeds"] == [0]
    variants = [r["variant"] for r in data["summary"]]
    assert variants[0] == "chex (defaults)" and {"magnitude", "random", "chex explore=false"} <= set(variants)
    for r in data["runs"]:
        assert r["status"] == "ok", r
        assert abs(r["macs_reduction"] - 0.5) <= 0.01, r
    # switching exploration off leaves one pruning event; CHEX's defaults explore more than once
    events = {r["variant"]: r["events"] for r in data["runs"]}
    assert events["chex explore=false"] == 1 and events["chex (defaults)"] > 1
    md = (tmp_path / "chex_ablation.md").read_text()
    assert "| chex (defaults) |" in md and "--quick" in md


def test_chex_event_cost_quick(tmp_path):
    run_script("chex_event_cost.py", tmp_path)
    data = json.loads((tmp_path / "chex_event_cost.json").read_text())
    rows = data["result"]["rows"]
    assert data["result"]["status"] == "ok" and data["settings"]["params"] == {"delta_T": 0.5}
    assert rows[0]["step"] == 0 and rows[0]["kind"] == "start" and len(rows) >= 3
    for r in rows:
        assert r["loss_after"] == pytest.approx(r["loss_before"] + r["change"])
        assert r["loss_before"] > 0 and r["active_after"] <= r["channels"]
    # channels out/in balance the active counts from one event to the next
    for prev, r in zip(rows, rows[1:]):
        assert prev["active_after"] - r["out"] + r["in"] == r["active_after"]
    md = (tmp_path / "chex_event_cost.md").read_text()
    assert "| loss before |" in md and "--quick" in md


@pytest.mark.slow  # times pairs of models repeatedly; make test-all runs it
def test_latency_stability_quick(tmp_path):
    run_script("latency_stability.py", tmp_path)
    data = json.loads((tmp_path / "latency_stability.json").read_text())
    (r,) = data["results"]
    assert r["batch"] == 1 and set(r["runs"]) == {"before", "wall clock", "CPU time"}
    for method, runs in r["runs"].items():
        assert len(runs) == 3 and all(x["speedup"] > 0 for x in runs)
        s = r["summary"][method]
        assert s["min"] <= s["median"] <= s["max"] and s["spread"] == pytest.approx(s["max"] / s["min"])
    assert all(x["rounds"] == 20 for x in r["runs"]["before"]) and all(x["rounds"] >= 20 for x in r["runs"]["CPU time"])
    md = (tmp_path / "latency_stability.md").read_text()
    assert "| 1 | CPU time |" in md and "--quick" in md


@pytest.mark.slow  # times training steps of several variants; make test-all runs it
def test_train_throughput_quick(tmp_path):
    run_script("train_throughput.py", tmp_path, "--threads", "1", "--models", "resnet20")
    data = json.loads((tmp_path / "train_throughput.json").read_text())
    assert {"machine", "command", "models"} <= set(data)
    (m,) = data["models"]
    assert m["model"] == "resnet20" and [r["variant"] for r in m["rows"]] == ["eager", "channels_last"]
    for r in m["rows"]:
        assert len(r["bare_runs"]) == len(r["harness_runs"]) == m["reps"]
        ratios = sorted(h / b for h, b in zip(r["harness_runs"], r["bare_runs"]))
        assert r["harness_over_bare"] == pytest.approx((ratios[(len(ratios) - 1) // 2] + ratios[len(ratios) // 2]) / 2)
    assert m["rows"][0]["bare_gain_over_eager"] == pytest.approx(1.0)
    md = (tmp_path / "train_throughput.md").read_text()
    assert "| eager |" in md and "| channels_last |" in md and "--quick" in md


@pytest.mark.slow  # a real `prunekit run --latency` with timing: a minute or two on a shared machine
def test_latency_budget_quick(tmp_path):
    run_script("latency_budget.py", tmp_path)
    data = json.loads((tmp_path / "latency_budget.json").read_text())
    (case,) = data["cases"]
    assert case["case"] == "digits" and data["target"] == 0.8
    r = case["result"]
    assert r["latency_target"] == 0.8 and r["latency_budget_batch"] == 256 and r["latency_achieved"] > 0
    assert case["resolutions"] and len(case["check"]["repeats"]) == 3 and "--latency 0.8" in case["command"]
    md = (tmp_path / "latency_budget.md").read_text()
    assert "| digits | 256 |" in md and "target ms" in md and "--quick" in md
