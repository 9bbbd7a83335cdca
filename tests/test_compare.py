"""A strategy that raises inside ``compare`` is reported in its row with its error; the others' results
are kept (through the CLI, with the failing strategy registered from a --plugins module)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLUGIN = '''
import prunekit as pk

Base = type(pk.get_strategy("magnitude"))


@pk.register_strategy("broken")
class Broken(Base):
    """Magnitude pruning that fails at its first allocation."""

    def allocate(self, state, budget):
        raise RuntimeError("boom: broken on purpose")
'''


def test_failing_strategy_is_reported_and_others_kept(tmp_path):
    (tmp_path / "broken_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]))
    cmd = [
        sys.executable,
        "-m",
        "prunekit",
        "compare",
        "--plugins",
        "broken_plugin",
        "--strategies",
        "broken,random",
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--progress",
        "off",
        "--out",
        str(tmp_path),
        "--name",
        "cmp",
        "--set",
        "run.latency_runs=2",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]  # one strategy succeeded
    assert (
        "failed: RuntimeError: boom: broken on purpose" in r.stdout.replace("\n", " ").replace("│", " ")
        or "boom" in r.stdout
    )
    rows = {row["strategy"]: row for row in json.loads((tmp_path / "cmp" / "comparison.json").read_text())}
    assert rows["broken"]["status"] == "failed" and "boom: broken on purpose" in rows["broken"]["error"]
    assert rows["random"]["status"] == "ok" and rows["random"]["top1"] is not None
    assert "boom" in (tmp_path / "cmp" / "broken" / "error.txt").read_text()
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| broken |" in md and "failed: RuntimeError: boom" in md and "| random |" in md
    csv_text = (tmp_path / "cmp" / "comparison.csv").read_text()
    assert "broken" in csv_text and "random" in csv_text


def test_all_failing_exits_nonzero(tmp_path):
    (tmp_path / "broken_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]))
    cmd = [
        sys.executable,
        "-m",
        "prunekit",
        "compare",
        "--plugins",
        "broken_plugin",
        "--strategies",
        "broken",
        "--dataset",
        "synthetic",
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--progress",
        "off",
        "--out",
        str(tmp_path),
        "--name",
        "cmp2",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert (tmp_path / "cmp2" / "comparison.json").exists()


def _small(tmp_path, sets):
    from prunekit.config import load_config

    base = ["data.name=digits", "model.name=small_cnn", "train.epochs=1", "train.threads=1", "run.progress=off",
            "run.latency_runs=2", f"run.out={tmp_path}", "run.name=cmp", "prune.strategy=chex"]  # fmt: skip
    return load_config(sets=base + sets)


def test_each_strategy_gets_its_own_parameters(tmp_path):
    """prune.params are prune.strategy's; the others run with prune.strategy_params.NAME (or their defaults),
    so a config written for CHEX compares against magnitude and random without failing them."""
    import yaml

    from prunekit.harness import compare

    cfg = _small(tmp_path, ["prune.params.delta_0=0.2", "prune.strategy_params.magnitude.norm=l2"])
    results, out = compare(cfg, ["chex", "magnitude", "random"], dense=True)
    assert [r.status for r in results] == ["ok"] * 4, [r.error for r in results]

    def params(name):
        return yaml.safe_load((tmp_path / "cmp" / name / "config.yaml").read_text())["prune"]["params"]

    assert params("chex") == {"delta_0": 0.2}
    assert params("magnitude") == {"norm": "l2"}
    assert params("random") == {} and params("dense") == {}


def test_a_bad_strategy_parameter_fails_before_any_training(tmp_path):
    import pytest

    from prunekit.config import ConfigError
    from prunekit.harness import compare

    cases = [
        (["prune.strategy_params.magnitud.norm=l2"], r"prune.strategy_params.magnitud: .*did you mean 'magnitude'"),
        (["prune.strategy_params.magnitude.norm=l3"], r"prune.strategy_params.magnitude: .*norm"),
        (["prune.strategy_params.dense.x=1"], r"dense run takes no parameters"),
    ]
    for sets, match in cases:
        with pytest.raises(ConfigError, match=match):
            compare(_small(tmp_path, sets), ["chex", "magnitude"], dense=True)
    with pytest.raises(Exception, match="delta_00"):  # prune.params of the config's strategy, as before
        compare(_small(tmp_path, ["prune.params.delta_00=0.2"]), ["chex", "random"])
    assert not (tmp_path / "cmp").exists()  # nothing trained, nothing written
