"""Kill a run with SIGKILL after a mid-epoch checkpoint, resume it, and check that it ends exactly like an
uninterrupted run: same masks, same per-epoch metrics, same final accuracy and loss (CPU, deterministic)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = {"train_seconds", "event_seconds"}


def _cmd(out, name, strategy, extra=()):
    return [
        sys.executable,
        "-m",
        "prunekit",
        "run",
        "--strategy",
        strategy,
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--deterministic",
        "--progress",
        "off",
        "--out",
        str(out),
        "--name",
        name,
        "--set",
        "run.checkpoint_steps=7",
        "--set",
        "train.threads=1",
        "--set",
        "run.latency_runs=2",
        *extra,
    ]


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return env


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _final_keep(run_dir):
    blob = torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu", weights_only=False)
    return blob["keep"], blob["model"]


STRATEGY_ARGS = {
    "none": [],
    # several prune/regrow events inside the run, so the kill lands between two of them
    "chex": ["--sparsity", "0.5", "--set", "prune.params.delta_T=1", "--set", "prune.params.T_max=3"],
}


@pytest.mark.parametrize("strategy", ["chex", pytest.param("none", marks=pytest.mark.slow)])
def test_kill_and_resume_matches_uninterrupted(tmp_path, strategy):
    extra = STRATEGY_ARGS[strategy]
    full = subprocess.run(
        _cmd(tmp_path, "full", strategy, extra), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert full.returncode == 0, full.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(tmp_path, "killed", strategy, extra),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    info_path = killed_dir / "checkpoint.json"
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            info = None
        if info and info["epoch"] >= 1 and info["batch"] > 0:  # mid-epoch, after the first epoch's events
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = info
            break
        time.sleep(0.01)
    assert killed_at is not None, f"the run ended before a mid-epoch checkpoint could be caught: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_dir / "result.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "prunekit", "run", "--resume", str(killed_dir)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at epoch" in (killed_dir / "run.log").read_text()

    a = json.loads((tmp_path / "full" / "result.json").read_text())
    b = json.loads((killed_dir / "result.json").read_text())
    for key in ("top1", "top5", "loss", "best_top1", "kept", "macs", "params", "num_events"):
        assert a[key] == b[key], (key, a[key], b[key], killed_at)
    assert _metrics(tmp_path / "full") == _metrics(killed_dir)
    keep_a, model_a = _final_keep(tmp_path / "full")
    keep_b, model_b = _final_keep(killed_dir)
    assert keep_a.keys() == keep_b.keys()
    assert all(torch.equal(keep_a[k], keep_b[k]) for k in keep_a)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    if strategy != "none":
        assert a["num_events"] >= 2 and any(not bool(m.all()) for m in keep_a.values())
