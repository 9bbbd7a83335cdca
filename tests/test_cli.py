"""Every subcommand through the real entry point (``python -m prunekit ...`` in a subprocess)."""

import json
import os
import time

import pytest
import torch
from cli_helpers import run_prunekit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = [
    "--dataset",
    "digits",
    "--model",
    "small_cnn",
    "--epochs",
    "2",
    "--progress",
    "plain",
    "--set",
    "run.latency_runs=3",
]


def pk(*args, cwd=ROOT, timeout=600, env=None):
    return run_prunekit(*args, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def chex_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    r = pk("run", "--strategy", "chex", *QUICK, "--out", str(out), "--name", "chex1")
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "chex1", r


def test_help_lists_every_subcommand():
    r = pk("--help")
    assert r.returncode == 0
    for cmd in ("run", "compare", "list", "graph", "export", "report"):
        assert cmd in r.stdout
        sub = pk(cmd, "--help")
        assert sub.returncode == 0 and "usage: prunekit " + cmd in sub.stdout


def test_run_prints_table_and_writes_run_dir(chex_run):
    run_dir, r = chex_run
    assert "top-1 %" in r.stdout and "chex" in r.stdout and "MACs red." in r.stdout
    assert "[prunekit] epoch 2/2" in r.stderr  # plain log lines when not a TTY
    for f in (
        "config.yaml",
        "metrics.csv",
        "result.json",
        "checkpoint.pt",
        "model_pruned.pt",
        "run.log",
        "events.json",
    ):
        assert (run_dir / f).exists(), f
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "ok" and res["strategy"] == "chex"
    assert res["macs"] < res["dense_macs"] and res["params"] < res["dense_params"]
    assert res["slim_max_abs_diff"] < 1e-3
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    import prunekit

    small = prunekit.load_pruned(str(run_dir / "model_pruned.pt"))
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert prunekit.count_params(small) == res["params"]


def test_export_writes_plan_torchscript_and_instructions(chex_run, tmp_path):
    run_dir, _ = chex_run
    out = tmp_path / "exp" / "small.pt"
    r = pk("export", str(run_dir), "--out", str(out), "--torchscript")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "prunekit.load_pruned" in r.stdout
    assert out.exists() and (tmp_path / "exp" / "LOAD.md").exists()
    import prunekit

    small = prunekit.load_pruned(str(out))
    scripted = torch.jit.load(str(tmp_path / "exp" / "small.torchscript.pt"))
    x = torch.randn(3, 1, 8, 8)
    small.eval()
    assert torch.allclose(small(x), scripted(x), atol=1e-5)
    res = json.loads((run_dir / "result.json").read_text())
    assert prunekit.count_params(small) == res["params"]


def test_report_rerenders_from_run_dirs(chex_run, tmp_path):
    run_dir, _ = chex_run
    r = pk("report", str(run_dir), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "chex" in r.stdout and "top-1 %" in r.stdout
    for f in ("comparison.md", "comparison.csv", "comparison.json", "accuracy_vs_macs.png", "kept_channels.png"):
        assert (tmp_path / "rep" / f).exists(), f
    assert "| chex |" in (tmp_path / "rep" / "comparison.md").read_text()
    bad = pk("report", str(tmp_path / "nothing_here"))
    assert bad.returncode == 2 and "not a directory" in bad.stderr


def test_list():
    r = pk("list")
    assert r.returncode == 0, r.stderr
    assert "chex" in r.stdout and "magnitude" in r.stdout and "random" in r.stdout
    assert "resnet56" in r.stdout and "digits" in r.stdout and "fashion-mnist" in r.stdout
    keys = pk("list", "keys")
    assert "train.lr" in keys.stdout.split()


def test_graph_print_json_dot(tmp_path):
    r = pk("graph", "--model", "resnet20", "--dataset", "cifar10")
    assert r.returncode == 0, r.stderr
    assert "12 prunable groups" in r.stdout and "frozen" in r.stdout
    r = pk(
        "graph",
        "--model",
        "small_cnn",
        "--input-shape",
        "1,28,28",
        "--json",
        str(tmp_path / "g.json"),
        "--dot",
        str(tmp_path / "g.dot"),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "g.json").read_text())
    assert len(data["groups"]) == 4
    assert (tmp_path / "g.dot").read_text().startswith("graph")


def test_compare_with_dense_writes_all_formats(tmp_path):
    r = pk("compare", "--strategies", "chex,magnitude", "--dense", *QUICK, "--out", str(tmp_path), "--name", "cmp")
    assert r.returncode == 0, r.stderr[-3000:]
    cmp = tmp_path / "cmp"
    rows = json.loads((cmp / "comparison.json").read_text())
    assert [row["strategy"] for row in rows] == ["none", "chex", "magnitude"]
    assert all(row["status"] == "ok" for row in rows)
    assert rows[1]["dense_top1"] == rows[0]["top1"]
    assert "Δ top-1" in r.stdout and "dense" in r.stdout
    for f in ("comparison.md", "comparison.csv", "accuracy_vs_macs.png", "kept_channels.png"):
        assert (cmp / f).exists(), f


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--set", "train.lr=abc"], "train.lr must be a number"),
        (["run", "--set", "train.epoch=3"], "did you mean 'train.epochs'"),
        (["run", "--dataset", "fashion-mnist", "--data-root", "/nonexistent/fm"], "apt install dataset-fashion-mnist"),
        (["run", "--model", "resnet57"], "did you mean"),
        (["run", "--strategy", "chexx", *QUICK], "chex"),
        (["run", "--plugins", "no_such_plugin_mod"], "cannot import 'no_such_plugin_mod'"),
        (["run", "--config", "/nonexistent.yaml"], "does not exist"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, args, message):
    r = pk(*args, "--out", str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
    assert message in r.stderr and "Traceback" not in r.stderr


def test_plugins_register_a_model(tmp_path):
    (tmp_path / "my_plugin.py").write_text(
        "import torch.nn as nn\n"
        "from prunekit.models import register_model\n"
        "@register_model('plugin_net')\n"
        "def plugin_net(num_classes=10, in_channels=1, input_size=8):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
    )
    r = pk("graph", "--plugins", "my_plugin", "--model", "plugin_net", "--dataset", "digits", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 prunable groups" in r.stdout


@pytest.mark.slow
def test_default_run_chex_under_a_minute(tmp_path):
    t0 = time.time()
    r = pk("run", "--strategy", "chex", cwd=tmp_path)
    wall = time.time() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "chex" in r.stdout and "top-1 %" in r.stdout
    assert wall < 60, f"prunekit run --strategy chex took {wall:.1f}s"
