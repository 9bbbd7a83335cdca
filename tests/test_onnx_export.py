"""ONNX export (``pk.export_onnx``, ``prunekit export RUN --onnx``): slimmed models round-trip through onnxruntime
(ResNet-18, MobileNetV2, a CHEX-pruned ResNet-20) within 1e-4; the export command also writes the JSON plan
(``--plan``), and without the ``onnx`` extra the command fails in one line naming it."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision

import prunekit as pk
from prunekit import onnx_export
from prunekit.testing import random_keep, randomize_parameters

ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'prunekit[onnx]' (make setup installs it)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4


def cli(*args, cwd, code=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "prunekit", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


# MobileNetV2's export alone takes about 35 s on 2 cores: `make test-all` runs it
@pytest.mark.parametrize("name", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_slimmed_torchvision_models_round_trip(name, tmp_path):
    model = randomize_parameters(torchvision.models.get_model(name, num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    g = pk.build_graph(model, x)
    small = pk.slim(model, g, random_keep(g, 0.5, seed=1)).eval()
    path = tmp_path / f"{name}.onnx"
    report = pk.export_onnx(small, x, str(path))
    assert report.path == str(path) and path.exists() and not (tmp_path / f"{name}.onnx.data").exists()
    assert report.max_abs_diff <= TOL and report.check_batches == [1, 3]
    assert report.max_abs_output > 0.1  # randomized norms: a check on outputs that are not all near zero
    # the file on its own, on a batch size it was not checked on
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xb = torch.randn(5, 3, 32, 32)
    got = sess.run(None, {"input": xb.numpy()})[0]
    with torch.no_grad():
        want = small(xb)
    assert got.shape == (5, 10)
    assert float((torch.from_numpy(got) - want).abs().max()) <= TOL


def test_a_failed_check_keeps_no_file(tmp_path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
    path = tmp_path / "m.onnx"
    monkeypatch.setattr(onnx_export, "check_onnx", lambda *a: (0.5, 1.0))  # onnxruntime computing something else
    with pytest.raises(RuntimeError, match="ONNX check failed: onnxruntime differs from PyTorch by 0.5"):
        pk.export_onnx(model, torch.randn(2, 3, 8, 8), str(path))
    assert not path.exists()


@pytest.fixture(scope="module")
def chex_resnet20(tmp_path_factory):
    """A CHEX-pruned ResNet-20: one short run on digits with two prune/regrow events."""
    out = tmp_path_factory.mktemp("runs")
    r = cli(
        "run", "--strategy", "chex", "--dataset", "digits", "--model", "resnet20", "--epochs", "2",
        "--progress", "off", "--set", "data.limit_train=384", "--set", "data.limit_test=64",
        "--set", "prune.params.delta_T=1", "--set", "prune.params.T_max=2", "--set", "run.latency_runs=2",
        "--out", str(out), "--name", "chex20", cwd=out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "chex20"


def test_export_onnx_and_plan_of_a_chex_run(chex_resnet20, tmp_path):
    run_dir = chex_resnet20
    r = cli("export", str(run_dir), "--onnx", "--plan", "out/plan.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    onnx_path = run_dir / "export" / "model_pruned.onnx"
    assert f"onnx: {onnx_path}" in r.stdout
    diff = float(r.stdout.split("onnx_max_abs_diff: ")[1].split()[0])
    assert diff <= TOL
    load_md = (run_dir / "export" / "LOAD.md").read_text()
    assert "onnxruntime" in load_md and str(onnx_path) in load_md and "std = np.array(" in load_md
    assert "prunekit.load_plan(" in load_md and str(tmp_path / "out" / "plan.json") in load_md
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["factory"] == "prunekit.models:build_model" and plan["factory_kwargs"]["name"] == "resnet20"
    assert plan["input"]["shape"] == [1, 8, 8]
    assert any(len(g["kept"]) < g["size"] for g in plan["groups"])  # CHEX pruned something
    # in a fresh process: onnxruntime, the JSON plan and the torch plan all compute the same slimmed model
    code = """
import sys, torch, onnxruntime as ort, prunekit as pk
onnx_path, plan, weights, pt = sys.argv[1:]
a = pk.load_plan(plan, state_dict=weights)
b = pk.load_pruned(pt)
x = torch.randn(7, 1, 8, 8)
y = torch.from_numpy(ort.InferenceSession(onnx_path).run(None, {"input": x.numpy()})[0])
with torch.no_grad():
    print(float((a(x) - b(x)).abs().max()), float((y - b(x)).abs().max()))
"""
    args = [str(onnx_path), "out/plan.json", "out/plan.weights.pt", str(run_dir / "export" / "model_pruned.pt")]
    r = cli(*args, cwd=tmp_path, code=code)
    assert r.returncode == 0, r.stderr[-3000:]
    plan_diff, onnx_diff = (float(v) for v in r.stdout.split())
    assert plan_diff == 0.0 and onnx_diff <= TOL
    bad = cli("export", str(run_dir), "--plan", "plan.txt", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "prunekit: error: --plan writes JSON: give a path ending in .json, got 'plan.txt'"
    ]


def test_without_the_onnx_extra_one_line(chex_resnet20, tmp_path):
    """onnx not importable (as where the extra is not installed): exit 2, one line with the install command, and
    nothing written."""
    run_dir = chex_resnet20
    before = sorted(os.listdir(run_dir))
    code = "import sys; sys.modules['onnx'] = None; from prunekit.cli import main; sys.exit(main(sys.argv[1:]))"
    r = cli("export", str(run_dir), "--onnx", "--out", str(tmp_path / "e" / "m.pt"), cwd=tmp_path, code=code)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "prunekit: error: ONNX export needs onnx and onnxscript, which are not installed: pip install 'prunekit[onnx]'"
    ]
    assert not (tmp_path / "e").exists() and sorted(os.listdir(run_dir)) == before
