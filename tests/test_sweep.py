"""Sweeps beyond one machine and reports over several directories: ``prunekit compare --emit-commands`` writes
one ``prunekit run`` per run; run by a plain shell loop, ``prunekit report ROOT`` gives the table ``compare``
gives, with missing, unfinished and failed runs marked; a report over two compare directories tells every row
apart (budget / run columns) and puts the dense runs first."""

import json
import os
import subprocess
import sys

import pytest
from cli_helpers import run_prunekit

from prunekit.config import Config, ConfigError
from prunekit.results import RunResult
from prunekit.sweep import emit_commands, gather

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
TINY = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "1", "--progress", "off", "--deterministic",
        "--set", "data.limit_train=256", "--set", "data.limit_test=128", "--set", "run.latency_runs=2"]  # fmt: skip
# what timing does not change
SAME = ["strategy", "top1", "best_top1", "loss", "params", "macs", "macs_reduction", "kept", "status"]


def pk(*args, cwd, env=None):
    return run_prunekit(*args, cwd=cwd, env=env)


def table_rows(stdout):
    """{strategy cell: [cells]} of the rich table's body lines (box-drawing borders)."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) > 5 and cells[0] and cells[0] not in ("strategy",):
            out[cells[0]] = cells
    return out


def test_emitted_commands_run_by_a_shell_loop_report_the_compare_table(tmp_path):
    wide = {"COLUMNS": "200"}
    r = pk("compare", "--strategies", "magnitude", "--dense", *TINY, "--out", "runs", "--name", "cmp", cwd=tmp_path,
           env=wide)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    expected = json.loads((tmp_path / "runs" / "cmp" / "comparison.json").read_text())
    cmp_table = table_rows(r.stdout)

    r = pk("compare", "--strategies", "magnitude", "--dense", *TINY, "--out", "runs", "--name", "sweep",
           "--emit-commands", "cmds.txt", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    root = tmp_path / "runs" / "sweep"
    commands = (tmp_path / "cmds.txt").read_text().splitlines()
    assert len(commands) == 2 and all(" && prunekit run --config " in c for c in commands)
    assert sorted(os.listdir(root)) == ["configs", "sweep.json"]  # nothing trained yet
    assert [(row.name, row.status) for row in gather([str(root)])] == [("dense", "missing"), ("magnitude", "missing")]

    # any scheduler will do: here a plain shell loop, from another directory
    loop = 'while IFS= read -r cmd; do sh -c "$cmd" > /dev/null 2>&1 || echo "failed: $cmd"; done < "$1"'
    env = dict(os.environ, PYTHONPATH=ROOT, PATH=VENV_BIN + os.pathsep + os.environ["PATH"])
    done = subprocess.run(["sh", "-c", loop, "sh", str(tmp_path / "cmds.txt")], cwd="/", env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr

    r = pk("report", str(root), cwd=tmp_path, env=wide)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((root / "comparison.json").read_text())
    assert [[row[k] for k in SAME if k in row] for row in got] == [
        [row[k] for k in SAME if k in row] for row in expected
    ]
    sweep_table = table_rows(r.stdout)
    assert list(sweep_table) == ["dense", "magnitude"] == list(cmp_table)
    for name in sweep_table:  # strategy, top-1, Δ top-1, params, MACs, MACs red. as printed
        assert sweep_table[name][:6] == cmp_table[name][:6]
    assert (root / "accuracy_vs_macs.png").exists()


def _fake_run(run_dir, strategy, top1=None, *, macs=None, sparsity=None, files=()):
    """A run directory as prunekit writes it: config.yaml, and result.json when ``top1`` is given."""
    os.makedirs(run_dir, exist_ok=True)
    cfg = Config()
    cfg.prune.strategy, cfg.prune.macs, cfg.prune.sparsity = strategy, macs, sparsity
    cfg.train.epochs = 2
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    if top1 is not None:
        res = RunResult(strategy=strategy, top1=top1, dataset="digits", model="resnet20", epochs=2, macs=1000,
                        params=100, dense_macs=2000, dense_params=200)  # fmt: skip
        (run_dir / "result.json").write_text(json.dumps(res.to_dict()))
    for name, text in files:
        (run_dir / name).write_text(text)


def test_report_marks_missing_unfinished_and_failed_runs(tmp_path):
    root = tmp_path / "sweep"
    names = ["dense", "chex", "magnitude", "random", "l1", "l2"]
    runs = [{"name": n, "strategy": "none" if n == "dense" else n, "config": "", "command": ""} for n in names]
    os.makedirs(root)
    (root / "sweep.json").write_text(json.dumps({"format": "prunekit-sweep/1", "runs": runs}))
    _fake_run(root / "dense", "none", 90.0)
    _fake_run(root / "chex", "chex", files=[("error.txt", "Traceback ...\nRuntimeError: out of memory\n")])
    _fake_run(root / "chex-2", "chex", 88.0)  # the command run again after it failed: the finished one counts
    _fake_run(root / "magnitude", "magnitude", files=[("checkpoint.json", '{"epoch": 1}')])
    _fake_run(root / "random", "random", files=[("error.txt", "Traceback ...\nValueError: bad thing\n")])
    _fake_run(root / "l2", "l2", 87.0)
    _fake_run(root / "l2-2", "l2", files=[("checkpoint.json", '{"epoch": 1}')])  # started again: the result stands
    rows = gather([str(root)])
    assert [(r.name, r.status) for r in rows] == [
        ("dense", "ok"),
        ("chex", "ok"),
        ("magnitude", "unfinished"),
        ("random", "failed"),
        ("l1", "missing"),
        ("l2", "ok"),
    ]
    assert rows[1].run_dir == str(root / "chex-2") and rows[1].dense_top1 == 90.0
    assert rows[5].run_dir == str(root / "l2")
    assert rows[2].error.startswith("epoch 1 of 2") and f"--resume {root / 'magnitude'}" in rows[2].error
    assert rows[3].error == "ValueError: bad thing"
    r = pk("report", str(root), "--no-plots", cwd=tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr[-3000:]
    table = table_rows(r.stdout)
    assert table["chex"][2] == "-2.00" and table["dense"][-1] == "ok"
    assert table["magnitude"][-1].startswith("unfinished: epoch 1 of 2")
    assert table["random"][-1] == "failed: ValueError: bad thing"
    assert table["l1"][-1].startswith("missing: no run directory")


def test_report_over_two_compare_directories(tmp_path):
    for cmp, budget, dense_top1, chex_top1 in (("cmp-a", {"sparsity": 0.5}, 90.0, 89.0), ("cmp-b", {"macs": 0.3},
                                                                                          91.0, 87.0)):  # fmt: skip
        _fake_run(tmp_path / cmp / "chex", "chex", chex_top1, **budget)
        _fake_run(tmp_path / cmp / "dense", "none", dense_top1)
        _fake_run(tmp_path / cmp / "magnitude", "magnitude", 85.0, **budget)
    r = pk("report", "cmp-a", "cmp-b", "--out", "rep", cwd=tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "rep" / "comparison.json").read_text())
    keys = [(row["strategy"], row["budget"], row["run_label"]) for row in rows]
    assert len(set(keys)) == len(keys) == 6  # every row told apart
    assert [row["strategy"] for row in rows[:2]] == ["none", "none"]  # dense first
    assert [row["run_label"] for row in rows] == ["cmp-a/dense", "cmp-b/dense", "cmp-a/chex", "cmp-a/magnitude",
                                                  "cmp-b/chex", "cmp-b/magnitude"]  # fmt: skip
    assert [row["budget"] for row in rows[2:]] == ["sparsity 0.5", "sparsity 0.5", "MACs 0.3", "MACs 0.3"]
    # Δ top-1 against the dense run of the same compare directory
    by = {row["run_label"]: row for row in rows}
    assert by["cmp-a/chex"]["dense_top1"] == 90.0 and by["cmp-b/chex"]["dense_top1"] == 91.0
    head = next(line for line in r.stdout.splitlines() if "strategy" in line)
    assert "budget" in head and "run" in head
    assert sum(line.count("cmp-b/chex") for line in r.stdout.splitlines()) == 1
    assert "-4.00" in next(line for line in r.stdout.splitlines() if "cmp-b/chex" in line)
    assert (tmp_path / "rep" / "accuracy_vs_macs.png").exists()
    # one compare directory alone: the table as compare prints it (no extra columns)
    one = pk("report", "cmp-a", "--no-plots", cwd=tmp_path, env={"COLUMNS": "250"})
    head = next(line for line in one.stdout.splitlines() if "strategy" in line)
    assert "budget" not in head and " run " not in head
    assert list(table_rows(one.stdout)) == ["dense", "chex", "magnitude"]


def test_emit_commands_refuses_to_overwrite(tmp_path):
    (tmp_path / "runs" / "sweep").mkdir(parents=True)
    (tmp_path / "runs" / "sweep" / "something").write_text("x")
    r = pk("compare", "--strategies", "magnitude", *TINY, "--out", "runs", "--name", "sweep", "--emit-commands",
           "cmds.txt", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"prunekit: error: {tmp_path / 'runs' / 'sweep'} exists and is not empty; give the sweep another --name "
        "(or --out)"
    ]
    assert not (tmp_path / "cmds.txt").exists()
    (tmp_path / "cmds.txt").mkdir()
    cfg = Config()
    with pytest.raises(ConfigError, match="--emit-commands .*cmds.txt: that is a directory; give a file name"):
        emit_commands(cfg, ["magnitude"], False, str(tmp_path / "cmds.txt"), root=str(tmp_path / "runs" / "new"))
    assert not (tmp_path / "runs" / "new").exists()
