"""Custom strategies end to end: the example of docs/custom-strategy.md runs as written, a strategy shipped by
an outside package through the ``prunekit.strategies`` entry points is discovered and trained by the same
harness, and a decorator-registered strategy (Python and ``prunekit run --plugins``) goes through it too.

Every run is tiny (small_cnn of width 8, one epoch on 256 digits, 4 optimizer steps)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest_strategies import one_thread, registry_sandbox  # noqa: F401  (one_thread is a fixture)

import prunekit as pk
from prunekit import checkpoint as ckpt
from prunekit import registry
from prunekit.strategy import Param, Schedule, Strategy, top_k_mask

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "custom-strategy.md"
TINY = {
    "data": {"name": "digits", "limit_train": 256, "limit_test": 128},
    "model": {"name": "small_cnn", "kwargs": {"width": 8}},
    "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
    "run": {"progress": "off", "latency_runs": 2, "latency_batch": 4},
}
SIZES = {"features.0.0": 8, "features.1.0": 8, "features.3.0": 16, "features.5.0": 32}  # small_cnn, width 8


@pytest.fixture(autouse=True)
def sandbox():
    """Throwaway strategy names do not leak into the other tests."""
    with registry_sandbox():
        yield


def tiny(tmp_path: Path, strategy: str, **prune) -> dict:
    cfg = {k: dict(v) for k, v in TINY.items()}
    cfg["prune"] = {"strategy": strategy, **prune}
    cfg["run"].update(out=str(tmp_path / "runs"), name=strategy)
    return cfg


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def saved_masks(run_dir: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(keep masks, model state) of a finished run's last checkpoint."""
    blob = ckpt.load_checkpoint(run_dir)
    return blob["keep"], blob["model"]


def assert_enforced(keep: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """Pruned channels are zero in their conv filters and BN, kept ones are not (small_cnn's layout)."""
    for gid, mask in keep.items():
        conv = gid[: -len(".0")]  # features.N.0 -> features.N
        w, gamma = state[f"{conv}.0.weight"], state[f"{conv}.1.weight"]
        assert w[~mask].abs().sum() == 0 and gamma[~mask].abs().sum() == 0, gid
        assert bool((w[mask].flatten(1).abs().sum(1) > 0).all()), gid


def assert_result(res, strategy: str, kept: dict[str, int]) -> None:
    assert res.status == "ok" and res.strategy == strategy
    assert res.group_sizes == SIZES
    assert res.kept == kept
    assert res.macs < res.dense_macs and res.params < res.dense_params
    assert res.slim_max_abs_diff is not None and res.slim_max_abs_diff < 1e-4  # slimmed == masked model
    assert (Path(res.run_dir) / "model_pruned.pt").exists()


# ---------------------------------------------------------------------------------------------- (a) the doc


def test_doc_example_runs_as_written(tmp_path, monkeypatch, one_thread):  # noqa: F811
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 2 and "@pk.register_strategy(" in blocks[0] and "pk.run(" in blocks[1]
    assert "def prune(" in blocks[0] and "def allocate(" not in blocks[0] and "def regrow(" not in blocks[0]
    monkeypatch.chdir(tmp_path)  # the example writes runs/ in the working directory
    ns: dict = {"__name__": "custom_strategy_doc"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} python block {i + 1}", "exec"), ns)

    info = pk.list_strategies()["filter_bn"]
    assert info.source == "decorator in custom_strategy_doc" and info.defaults == {"use_bn": True}
    res = ns["result"]
    assert_result(res, "filter_bn", {g: n // 2 for g, n in SIZES.items()})  # sparsity 0.5, uniform
    assert Path(res.run_dir).parent == tmp_path / "runs"
    events = json.loads((Path(res.run_dir) / "events.json").read_text())
    assert [(e["step"], e["kind"], e["regrown"]) for e in events] == [(0, "start", 0)]
    keep, state = saved_masks(res.run_dir)
    assert {g: int(m.sum()) for g, m in keep.items()} == res.kept
    assert_enforced(keep, state)
    # the "pruning later" block defines a working subclass: its schedule is two epochs in
    later = ns["FilterBNAfterTwoEpochs"](use_bn=False)
    assert later.schedule(steps_per_epoch=4, epochs=3).steps == (8,)


# ---------------------------------------------------------------------------------------------- (b) entry points

PLUGIN_MODULE = '''
"""An outside package's strategy, registered only through its entry point (no decorator)."""
import torch
from prunekit.strategy import Param, Strategy, top_k_mask


class LastChannels(Strategy):
    """Keep the last channels of every group (a plugin used by prunekit's tests)."""

    params = {"reverse": Param(bool, False, help="keep the first channels instead")}

    def prune(self, state, group, keep):
        order = torch.arange(group.size, dtype=torch.float32)
        return top_k_mask(-order if self.reverse else order, keep)
'''


@pytest.fixture
def outside_package(tmp_path, monkeypatch):
    """A distribution ``pk-demo-plugin`` on sys.path: module ``pk_demo_plugin`` and its dist-info with an
    entry point ``last_channels`` in the group ``prunekit.strategies``."""
    site = tmp_path / "site"
    (site / "pk_demo_plugin").mkdir(parents=True)
    (site / "pk_demo_plugin" / "__init__.py").write_text(PLUGIN_MODULE)
    info = site / "pk_demo_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pk-demo-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nlast_channels = pk_demo_plugin:LastChannels\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("pk_demo_plugin", None)


def test_entry_point_plugin_is_discovered_and_trained_by_the_harness(outside_package, tmp_path, one_thread):  # noqa: F811
    assert "last_channels" not in pk.list_strategies()  # the registry scanned before the package existed
    registry.discover(refresh=True)  # as after `pip install`: scan the entry points again
    assert registry.failed_plugins() == {}
    infos = pk.list_strategies()
    assert {"chex", "magnitude", "random", "last_channels"} <= set(infos)  # the built-ins are still there
    info = infos["last_channels"]
    assert info.source == "entry point from pk-demo-plugin"
    assert info.cls.__module__ == "pk_demo_plugin" and info.defaults == {"reverse": False}
    assert info.description.startswith("Keep the last channels")

    # the same harness, unchanged, with a MACs budget
    res = pk.run(tiny(tmp_path, "last_channels", params={"reverse": False}, macs=0.5))
    assert res.status == "ok" and res.strategy == "last_channels"
    assert abs(res.macs / res.dense_macs - 0.5) <= 0.01 * 0.5  # the MACs target, within 1%
    keep, state = saved_masks(res.run_dir)
    for gid, mask in keep.items():
        k = int(mask.sum())
        assert k >= 1 and bool(mask[-k:].all()) and not bool(mask[:-k].any()), gid  # the last k channels
    assert {g: int(m.sum()) for g, m in keep.items()} == res.kept
    assert_enforced(keep, state)


def test_entry_point_plugin_found_by_a_fresh_process(outside_package):
    """No refresh tricks: a new `prunekit` process with the package on its path lists it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(outside_package), str(ROOT)]), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "prunekit", "list", "strategies"],
        cwd=outside_package.parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "last_channels: Keep the last channels of every group" in r.stdout
    assert "reverse = False" in r.stdout and "FAILED" not in r.stdout


# ---------------------------------------------------------------------------------------------- (c) decorator


def test_decorator_strategy_with_schedule_and_regrow_through_the_harness(tmp_path, one_thread):  # noqa: F811
    """A strategy that overrides more of the interface: events at steps 0, 2 and 4 (the end of the one
    epoch), a regrow fraction at the middle event, random choices from the run's generator."""

    @pk.register_strategy("test_explore")
    class Explore(Strategy):
        """Random channels, pruned and partly regrown on a schedule."""

        params = {"delta": Param(float, 0.2, min=0, max=1, max_exclusive=True, help="regrow fraction")}

        def schedule(self, steps_per_epoch, epochs):
            return Schedule.every(steps_per_epoch // 2, stop=steps_per_epoch)

        def prune(self, state, group, keep):
            live = state.mask(group).float() + torch.rand(group.size, generator=state.generator)
            return top_k_mask(live, keep)  # random among the active channels first

        def regrow_fraction(self, state):
            return self.delta if 0 < state.step < state.total_steps else 0.0

        def regrow(self, state, group, count):
            pruned = torch.nonzero(~state.mask(group)).flatten()
            return pruned[torch.randperm(len(pruned), generator=state.generator)[:count]]

    assert pk.list_strategies()["test_explore"].source == f"decorator in {__name__}"
    res = pk.run(tiny(tmp_path, "test_explore", params={"delta": 0.25}, sparsity=0.5))
    assert_result(res, "test_explore", {g: n // 2 for g, n in SIZES.items()})  # regrow 0 at the last event
    events = json.loads((Path(res.run_dir) / "events.json").read_text())
    assert [e["step"] for e in events] == [0, 2, 4]
    assert [e["kind"] for e in events] == ["start", "prune+regrow", "prune"]
    assert events[1]["regrow_fraction"] == 0.25 and events[1]["regrown"] > 0
    assert events[1]["kept_total"] > events[2]["kept_total"] == sum(SIZES.values()) // 2
    keep, state = saved_masks(res.run_dir)
    assert_enforced(keep, state)


def test_cli_plugins_flag_runs_the_doc_module(tmp_path):
    """`prunekit run --plugins my_strategies --strategy filter_bn`, with the module of the doc's first block."""
    module = python_blocks(DOC.read_text())[0]
    assert module.startswith("# my_strategies.py")
    (tmp_path / "my_strategies.py").write_text(module)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [
        "run", "--plugins", "my_strategies", "--strategy", "filter_bn", "--dataset", "digits",
        "--model", "small_cnn", "--epochs", "1", "--sparsity", "0.5", "--progress", "plain",
        "--out", str(tmp_path / "runs"), "--name", "cli",
        "--set", "model.kwargs.width=8", "--set", "data.limit_train=256", "--set", "data.limit_test=128",
        "--set", "prune.params.use_bn=false", "--set", "run.latency_runs=2",
    ]  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "prunekit", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "runs" / "cli" / "result.json").read_text())
    assert res["status"] == "ok" and res["strategy"] == "filter_bn"
    assert res["kept"] == {g: n // 2 for g, n in SIZES.items()}
    cfg = (tmp_path / "runs" / "cli" / "config.yaml").read_text()
    assert "use_bn: false" in cfg
    assert "filter_bn" in r.stdout  # the result table


def test_unknown_custom_parameter_is_named_before_any_work(tmp_path):
    @pk.register_strategy("test_params")
    class WithParam(Strategy):
        """Keep the first channels."""

        params = {"alpha": Param(float, 0.5, min=0, max=1)}

        def prune(self, state, group, keep):
            return top_k_mask(-torch.arange(group.size).float(), keep)

    with pytest.raises(ValueError, match="strategy 'test_params' has no parameter 'alpah'; did you mean 'alpha'"):
        pk.run(tiny(tmp_path, "test_params", params={"alpah": 0.1}))
    with pytest.raises(ValueError, match="parameter 'alpha' must be <= 1"):
        pk.run(tiny(tmp_path, "test_params", params={"alpha": 2}))
    assert not (tmp_path / "runs").exists()  # failed before the run directory was made
