"""``prunekit compare --resume DIR`` finishes an interrupted comparison from its directory: finished runs are
kept as they are, an unfinished run continues from its checkpoint, a failed or missing one runs again, and the
tables are written again; bad uses are one-line errors."""

import json
import os
import shutil

import pytest

from prunekit.harness import compare
from tests.cli_helpers import run_prunekit


def _config(out):
    return {
        "data": {"name": "digits"},
        "model": {"name": "small_cnn"},
        "train": {"epochs": 2, "seed": 3},
        "prune": {"sparsity": 0.5},
        "run": {"out": str(out), "name": "cmp", "progress": "off", "latency_runs": 2},
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    results, cmp_dir = compare(_config(out), ["magnitude", "random"], dense=True)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    return {r.name: r for r in results}, cmp_dir


def test_resume_keeps_finished_continues_unfinished_and_reruns_failed(finished, tmp_path, capfd):
    first, src = finished
    cmp_dir = str(tmp_path / "cmp")
    shutil.copytree(src, cmp_dir)
    dense_json = (tmp_path / "cmp" / "dense" / "result.json").read_bytes()
    # random was interrupted after its last checkpoint, before its result was written
    os.remove(os.path.join(cmp_dir, "random", "result.json"))
    # magnitude failed: compare's record of a failure (result.json "failed", error.txt), no checkpoint
    shutil.rmtree(os.path.join(cmp_dir, "magnitude"))
    os.makedirs(os.path.join(cmp_dir, "magnitude"))
    (tmp_path / "cmp" / "magnitude" / "error.txt").write_text("Traceback ...\nRuntimeError: out of memory\n")
    failed = {"strategy": "magnitude", "status": "failed", "error": "RuntimeError: out of memory"}
    (tmp_path / "cmp" / "magnitude" / "result.json").write_text(json.dumps(failed))
    os.remove(os.path.join(cmp_dir, "comparison.json"))

    results, out_dir = compare(None, resume=cmp_dir)
    err = capfd.readouterr().err
    assert "magnitude: running again (RuntimeError: out of memory)" in err  # the failure it replaces is said
    assert "random: continuing from its checkpoint" in err and "dense: kept (ok" in err
    assert out_dir == cmp_dir
    got = {r.name: r for r in results}
    assert list(got) == ["dense", "magnitude", "random"] and all(r.status == "ok" for r in results)
    assert (tmp_path / "cmp" / "dense" / "result.json").read_bytes() == dense_json  # kept, not retrained
    with open(os.path.join(cmp_dir, "random", "run.log")) as f:
        assert "resumed at epoch" in f.read()  # continued from its checkpoint, in its own directory
    assert not (tmp_path / "cmp" / "magnitude" / "error.txt").exists()  # ran again in the same place
    assert sorted(os.listdir(cmp_dir)) == sorted(
        ["compare.json", "dense", "magnitude", "random", "comparison.json", "comparison.md", "comparison.csv"]
        + [p for p in os.listdir(cmp_dir) if p.endswith(".png")]
    )
    for name in ("magnitude", "random"):  # the same seeded runs: the same results
        assert got[name].top1 == first[name].top1 and got[name].macs == first[name].macs
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "cmp" / "comparison.json").read_text())}
    assert rows["magnitude"]["status"] == "ok" and rows["random"]["dense_top1"] == first["dense"].top1


def test_resume_of_a_finished_comparison_trains_nothing(finished, tmp_path):
    _, src = finished
    cmp_dir = str(tmp_path / "cmp")
    shutil.copytree(src, cmp_dir)
    before = {n: (tmp_path / "cmp" / n / "result.json").read_bytes() for n in ("dense", "magnitude", "random")}
    r = run_prunekit("compare", "--resume", cmp_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "magnitude: kept (ok" in r.stderr and "comparison written to" in r.stdout
    assert {n: (tmp_path / "cmp" / n / "result.json").read_bytes() for n in before} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resume", "{missing}"], "no such directory"),
        (["--resume", "{plain}"], "no compare.json there"),
        (["--resume", "{cmp}", "--strategies", "chex"], "drop the other options"),
        (["--resume", "{cmp}", "--epochs", "3"], "drop the other options"),
        (["--trust-checkpoint", "--strategies", "chex"], "--trust-checkpoint applies to --resume DIR only"),
    ],
)
def test_bad_resume_is_one_line(finished, tmp_path, args, message):
    _, src = finished
    (tmp_path / "plain").mkdir()
    paths = {"missing": str(tmp_path / "nope"), "plain": str(tmp_path / "plain"), "cmp": src}
    r = run_prunekit("compare", *[a.format(**paths) for a in args], timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("prunekit: error: ") and message in r.stderr, r.stderr
