"""DDP with 2 gloo processes on CPU (``prunekit run --nproc 2``): masks and prune/regrow decisions
identical on both ranks after several events, and the run directory written once (by rank 0)."""

import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_gloo_ranks_agree_and_write_once(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "prunekit",
        "run",
        "--nproc",
        "2",
        "--strategy",
        "chex",
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--epochs",
        "4",
        "--sparsity",
        "0.5",
        "--progress",
        "plain",
        "--set",
        "prune.params.delta_T=1",
        "--set",
        "prune.params.T_max=3",
        "--set",
        "run.latency_runs=2",
        "--out",
        str(tmp_path),
        "--name",
        "ddp",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert sorted(os.listdir(tmp_path)) == ["ddp"]  # one run directory
    run_dir = tmp_path / "ddp"
    res = json.loads((run_dir / "result.json").read_text())
    assert res["world_size"] == 2
    ddp = res["ddp"]
    assert ddp["masks_identical"] and ddp["events_identical"], ddp
    assert len(ddp["mask_digests"]) == 2
    events = json.loads((run_dir / "events.json").read_text())
    assert len(events) >= 3  # initial pruning + several prune/regrow steps
    assert any(v < res["group_sizes"][k] for k, v in res["kept"].items())
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]  # each epoch written once
    # events end epochs 1-3: BN statistics re-estimated on both ranks (and averaged) before those evaluations
    assert [int(row["bn_recalibrated"]) > 0 for row in rows] == [True, True, True, False]
    assert r.stdout.count("top-1 %") == 1  # one table (rank 0 only)
    assert (run_dir / "run.log").read_text().count("done: top1") == 1
