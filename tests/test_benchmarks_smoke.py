"""The benchmark scripts run end to end (their --quick modes, in a subprocess, into a temporary folder) and
write the Markdown and JSON they promise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, out: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


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
