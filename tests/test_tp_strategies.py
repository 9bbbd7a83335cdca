"""benchmarks/tp_strategies.py: Torch-Pruning's pruner as prunekit strategies (tp_magnitude, tp_bnscale).

Valid masks that hit a MACs target within 1% on ResNet-20, the exact channels Torch-Pruning's own
MetaPruner removes, a run through the harness, and a clear error without torch-pruning."""

import copy
import importlib
import sys
from pathlib import Path

import pytest
import torch

import prunekit as pk
from prunekit.controller import PruningController
from prunekit.models import build_model
from prunekit.registry import unregister_strategy
from prunekit.strategy import MRUStore, ParamError

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("tp_magnitude", "tp_bnscale")
X = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def tps():
    """The plugin module, registered for this module's tests and unregistered afterwards (so the other
    test modules see the built-in registry only)."""
    pytest.importorskip("torch_pruning")
    sys.path.insert(0, str(ROOT))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield importlib.import_module("benchmarks.tp_strategies")
    finally:
        torch.set_num_threads(n)
        for name in NAMES:
            if name in pk.list_strategies():
                unregister_strategy(name)
        sys.modules.pop("benchmarks.tp_strategies", None)
        sys.path.remove(str(ROOT))


def resnet20(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=28)
    return model, pk.build_graph(model, X)


def test_registered_through_the_public_registry(tps):
    infos = pk.list_strategies()
    for name in NAMES:
        assert infos[name].source == "decorator in benchmarks.tp_strategies"
        assert {"iterative_steps", "prune_step", "input_size"} <= set(infos[name].params)
    assert pk.get_strategy("tp_magnitude").p == 2
    with pytest.raises(ParamError, match="'p'"):
        pk.get_strategy("tp_magnitude", p=3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("macs", [0.5, 0.3])
def test_masks_are_valid_and_hit_the_macs_target(tps, name, macs):
    model, graph = resnet20()
    ctrl = PruningController(model, graph, pk.get_strategy(name, input_size=28), pk.Budget(macs=macs), 10, 1)
    ctrl.start()
    keep = graph.validate_keep(ctrl.keep)
    assert set(keep) == {g.id for g in graph.groups}
    assert all(1 <= int(m.sum()) <= m.numel() for m in keep.values())
    assert abs(ctrl.macs_fraction() - macs) <= 0.01 * macs  # within 1% (relative), as the controller promises
    small = pk.slim(model, graph, keep).eval()
    assert abs(pk.count_macs(small, X) / pk.count_macs(resnet20()[0], X) - macs) <= 0.01 * macs
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_replays_torch_pruning_exactly(tps, name):
    """At TP's pruning ratio k/steps, the masks keep exactly the weights TP's MetaPruner leaves after k
    non-interactive steps on its own copy of the model."""
    import torch_pruning as tp

    steps, k = 40, 14
    model, graph = resnet20(seed=1)
    strat = pk.get_strategy(name, input_size=28, iterative_steps=steps)
    ctrl = PruningController(model, graph, strat, pk.Budget(sparsity=k / steps), 10, 1)
    original = copy.deepcopy(model)
    ctrl.start()
    ref = copy.deepcopy(original).eval()
    pruner = tp.pruner.MetaPruner(
        ref, X, importance=strat.importance(tp), pruning_ratio=1.0, iterative_steps=steps, ignored_layers=[ref.fc]
    )
    for _ in range(k):
        pruner.step()
    dims = MRUStore(original, graph).dim_masks(ctrl.keep)
    checked = 0
    for name_, mod in ref.named_modules():
        if not isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
            continue
        w = original.get_submodule(name_).weight.detach()
        for d, mask in dims.get((name_, "weight"), {}).items():
            w = w.index_select(d, torch.nonzero(mask).flatten())
        assert w.shape == mod.weight.shape, name_
        torch.testing.assert_close(w, mod.weight.detach(), atol=0, rtol=0)
        checked += 1
    assert checked == 22  # 19 convs + 2 shortcut convs + fc
    assert sum(int(m.sum()) for m in ctrl.keep.values()) < graph.total_channels


def test_prune_step_and_schedule(tps):
    s = pk.get_strategy("tp_bnscale", prune_step=7)
    assert 7 in s.schedule(10, 2) and 0 not in s.schedule(10, 2)


@pytest.mark.parametrize("name", NAMES)
def test_runs_through_the_harness(tps, tmp_path, name):
    cfg = {
        "data": {"name": "synthetic", "train_size": 64, "channels": 1, "image_size": 12},
        "model": {"name": "resnet20"},
        "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "threads": 1},
        "prune": {"strategy": name, "macs": 0.5, "params": {"input_size": 12, "iterative_steps": 100}},
        "run": {"out": str(tmp_path), "progress": "off", "latency_runs": 1, "latency_batch": 2},
    }
    res = pk.run(cfg)
    assert res.status == "ok" and res.strategy == name and res.num_events == 1
    assert abs((1 - res.macs_reduction) - 0.5) <= 0.01 * 0.5
    assert res.slim_max_abs_diff is not None and res.slim_max_abs_diff < 1e-3
    assert pk.RunResult.from_dir(res.run_dir).kept == res.kept


def test_missing_torch_pruning_is_a_clear_error(tps, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import torch_pruning -> ImportError
    with pytest.raises(ImportError, match="torch-pruning is not installed: pip install torch-pruning"):
        pk.get_strategy("tp_magnitude")
