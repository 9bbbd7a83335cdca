"""PruningController: masks stay enforced (weights, grads, SGD momentum, Adam moments), MRU restore with
zero optimizer state, budgets (exact counts, round_to, MACs within 1%), exact resume, clear errors, and
identical masks across DDP ranks."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest_strategies import (
    conv_graph,
    conv_net,
    linear_graph,
    linear_net,
    one_thread,  # noqa: F401  (fixture)
    train_steps,
)
from prunekit.graphs.graph import lookup_tensor
from torch import nn

import prunekit as pk
from prunekit.controller import PruningController
from prunekit.masks import pruned_positions
from prunekit.strategy import Schedule, Strategy, top_k_mask

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


class Scripted(Strategy):
    """Test strategy: prune to given masks at step 0, then regrow given channels at step 2."""

    def __init__(self, first, regrow_at_2=None):
        super().__init__()
        self.first, self.back = first, regrow_at_2 or {}

    def schedule(self, steps_per_epoch, epochs):
        return Schedule((0, 2))

    def allocate(self, state, budget):
        if state.step == 0:
            return {g.id: int(self.first[g.id].sum()) for g in state.graph.groups}
        wider = budget.sparsity < 0.5  # the regrow allocation (at S - regrow_fraction)
        return {g.id: int(state.mask(g).sum()) + (len(self.back.get(g.id, [])) if wider else 0)
                for g in state.graph.groups}  # fmt: skip

    def prune(self, state, group, keep):
        return self.first[group.id].clone() if state.step == 0 else state.mask(group).clone()

    def regrow_fraction(self, state):
        return 0.5 if state.step == 2 else 0.0

    def regrow(self, state, group, count):
        return torch.tensor(self.back.get(group.id, []), dtype=torch.long)[:count]


def _zero_at(t, positions):
    return all(bool((t.index_select(d, p.to(t.device)) == 0).all()) for d, p in positions)


def _check_enforced(model, graph, keep, opt):
    for (module, param), positions in pruned_positions(graph, keep).items():
        t = lookup_tensor(model, module, param)
        assert _zero_at(t.detach(), positions), f"{module}.{param}"
        if isinstance(t, nn.Parameter):
            if t.grad is not None:
                assert _zero_at(t.grad, positions), f"grad of {module}.{param}"
            for name, v in opt.state.get(t, {}).items():
                if isinstance(v, torch.Tensor) and v.shape == t.shape:
                    assert _zero_at(v, positions), f"{name} of {module}.{param}"


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    ],
    ids=["sgd-momentum", "adamw", "adam-amsgrad"],
)
def test_masks_enforced_on_weights_grads_and_optimizer_state(make_opt):
    model = conv_net()
    graph = conv_graph(model)
    # train dense first so the optimizer state is non-zero everywhere, then prune at step 3
    opt = make_opt(model.parameters())
    strategy = pk.get_strategy("magnitude", prune_step=3)
    ctrl = PruningController(model, graph, strategy, pk.Budget(sparsity=0.5), 2, 4, seed=0)
    ctrl.start(opt)
    train_steps(model, ctrl, opt, 3)
    assert len(ctrl.events) == 1 and ctrl.events[0]["step"] == 3
    _check_enforced(model, graph, ctrl.keep, opt)
    train_steps(model, ctrl, opt, 4, seed=1)
    _check_enforced(model, graph, ctrl.keep, opt)
    # the masked model computes what the slimmed one does
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    small = pk.slim(model, graph, ctrl.keep).eval()
    assert torch.allclose(model(x), small(x), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_mru_restore_and_zero_optimizer_state_for_regrown_channels():
    model = conv_net()
    graph = conv_graph(model)
    ids = [g.id for g in graph.groups]
    a, b = ids[0], ids[1]  # conv0 (8 ch) feeds conv3 (16 ch): conv3.weight[i, j] lives in both groups
    first = graph.full_keep()
    first[a] = torch.tensor([True, True, False, False, True, True, True, True])
    first[b] = torch.ones(16, dtype=torch.bool)
    first[b][5] = False
    before = copy.deepcopy(model.state_dict())
    strategy = Scripted(first, regrow_at_2={a: [2]})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ctrl = PruningController(model, graph, strategy, pk.Budget(sparsity=0.5), 10, 1, seed=0)
    ctrl.start(opt)
    w0 = model[0].weight
    assert bool((w0[2:4] == 0).all()) and bool((model[1].running_var[2:4] == 0).all())
    train_steps(model, ctrl, opt, 2)  # event at step 2: channel 2 of group a comes back
    assert ctrl.events[-1]["regrown"] == 1 and bool(ctrl.keep[a][2]) and not bool(ctrl.keep[a][3])
    # the values it had when it was last active (the initial ones: it was pruned before training)
    for name in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(model.state_dict()[name][2], before[name][2]), name
    # the consumer's input column comes back too, except where channel 5 of group b is still pruned
    w3, w3_before = model[3].weight.detach(), before["3.weight"]
    rows = torch.ones(16, dtype=torch.bool)
    rows[5] = False
    assert torch.equal(w3[rows, 2], w3_before[rows, 2]) and bool((w3[5] == 0).all())
    assert bool((opt.state[model[0].weight]["momentum_buffer"][2] == 0).all())  # fresh optimizer state
    assert bool((opt.state[model[3].weight]["momentum_buffer"][:, 2] == 0).all())


def test_zero_regrow_init_zeroes_the_filter_but_the_channel_still_learns():
    model = conv_net()
    graph = conv_graph(model)
    a = graph.groups[0].id  # conv0's 8 channels, read by conv3
    first = graph.full_keep()
    first[a] = torch.tensor([True, True, False, True, True, True, True, True])
    with torch.no_grad():
        model[1].bias[2] = 0.5  # a positive BN shift, as a channel pruned after some training may have
    before = copy.deepcopy(model.state_dict())
    strategy = Scripted(first, regrow_at_2={a: [2]})
    strategy.regrow_init = "zero"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ctrl = PruningController(model, graph, strategy, pk.Budget(sparsity=0.5), 10, 1, seed=0)
    ctrl.start(opt)
    train_steps(model, ctrl, opt, 2)  # channel 2 comes back at step 2
    assert bool(ctrl.keep[a][2])
    assert bool((model[0].weight[2] == 0).all()) and float(model[0].bias.detach()[2]) == 0.0  # filter: zero
    for name in ("1.weight", "1.bias", "1.running_var"):  # its BN: as it was when last active
        assert torch.equal(model.state_dict()[name][2], before[name][2]), name
    assert torch.equal(model[3].weight.detach()[:, 2], before["3.weight"][:, 2])  # its readers' columns too
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 0]))
    opt.zero_grad()
    loss.backward()
    assert float(model[0].weight.grad[2].abs().sum()) > 0  # not a dead channel: it gets a gradient


def test_mru_holds_trained_values_of_channels_pruned_mid_training():
    model, graph = linear_net(6, 4), linear_graph(6, 4)

    class Late(Strategy):
        def schedule(self, spe, epochs):
            return Schedule((2, 4))

        def prune(self, state, group, keep):
            return torch.tensor([True, True, True, False]) if state.step == 2 else state.mask(group).clone()

        def allocate(self, state, budget):
            return {"0": 3 if state.step == 2 else 4}

        def regrow(self, state, group, count):  # the step-4 allocation exceeds the 3 active: regrown here
            return torch.nonzero(~state.mask(group)).flatten()[:count]

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctrl = PruningController(model, graph, Late(), pk.Budget(sparsity=0.25), 10, 1)
    ctrl.start(opt)

    def steps(n):
        for _ in range(n):
            out = model(torch.randn(8, 6)).pow(2).mean()
            opt.zero_grad()
            out.backward()
            opt.step()
            ctrl.after_optimizer_step()

    steps(1)
    at_step_1 = model[0].weight.detach()[3].clone()
    steps(1)  # the step-2 event snapshots channel 3 as trained by two steps, then zeroes it
    assert not bool(ctrl.keep["0"][3])
    mru = ctrl.mru.values[("0", "weight")][3]
    assert not torch.equal(mru, at_step_1)  # trained by step 2, not the initial values
    assert bool((model[0].weight[3] == 0).all())
    steps(2)  # the step-4 event keeps all: channel 3 comes back (through regrow) with exactly its MRU values
    assert bool(ctrl.keep["0"].all())
    assert ctrl.events[-1]["groups"]["0"] == {
        "allocated": 4, "active_before": 3, "kept_by_prune": 3, "pruned": 0, "regrown": 1, "active_after": 4,
    }  # fmt: skip
    assert torch.equal(model[0].weight.detach()[3], mru)


def test_exact_counts_round_to_and_min_one():
    from prunekit.models import build_model

    net = build_model("resnet20", num_classes=10, in_channels=3, input_size=32)
    graph = pk.build_graph(net, torch.zeros(1, 3, 32, 32))
    for name, params in [("magnitude", {}), ("magnitude", {"allocation": "global"}), ("random", {})]:
        for round_to in (1, 8):
            ctrl = PruningController(copy.deepcopy(net), graph, pk.get_strategy(name, **params),
                                     pk.Budget(sparsity=0.6, round_to=round_to), 1, 1)  # fmt: skip
            ctrl.start(None)
            kept = ctrl.events[0]["kept"]
            for g in graph.groups:
                assert int(ctrl.keep[g.id].sum()) == kept[g.id] >= 1
                assert kept[g.id] % round_to == 0 or kept[g.id] == g.size
            if round_to == 1 and params.get("allocation") == "global":
                assert ctrl.events[0]["kept_total"] == graph.total_channels - round(0.6 * graph.total_channels)
    ctrl = PruningController(copy.deepcopy(net), graph, pk.get_strategy("random"), pk.Budget(sparsity=0.999), 1, 1)
    ctrl.start(None)
    assert all(int(m.sum()) == 1 for m in ctrl.keep.values())


@pytest.mark.parametrize("name,params", [("magnitude", {}), ("chex", {"delta_T": 1, "T_max": 2})])
@pytest.mark.parametrize("target", [0.5, 0.3])
def test_macs_budget_hit_within_one_percent(name, params, target):
    from prunekit.models import build_model

    net = build_model("resnet56", num_classes=10, in_channels=3, input_size=32)
    graph = pk.build_graph(net, torch.zeros(1, 3, 32, 32))
    ctrl = PruningController(net, graph, pk.get_strategy(name, **params), pk.Budget(macs=target), 1, 3)
    ctrl.start(None)
    with torch.no_grad():  # give the BN scales some spread, as training would
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(m.num_features)))
    for _ in range(2):
        ctrl.after_optimizer_step()
    final = ctrl.events[-1]
    assert abs(final["macs_fraction"] - target) <= 0.01 * target, final["macs_fraction"]
    assert final["macs_fraction"] == pytest.approx(graph.macs(ctrl.keep) / graph.macs())
    # round_to coarsens the steps (resnet56: 2 channels of a stage-3 residual group are ~2% of the MACs)
    coarse = PruningController(net, graph, pk.get_strategy(name, **params), pk.Budget(macs=target, round_to=2), 1, 3)
    coarse.start(None)
    for _ in range(2):
        coarse.after_optimizer_step()
    final = coarse.events[-1]
    assert abs(final["macs_fraction"] - target) <= 0.02 * target, final["macs_fraction"]
    assert all(k % 2 == 0 or k == graph[g].size for g, k in final["kept"].items())


def test_state_dict_resume_is_exact():
    def fresh():
        model = conv_net()
        graph = conv_graph(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        strategy = pk.get_strategy("chex", delta_T=1, T_max=4)
        ctrl = PruningController(model, graph, strategy, pk.Budget(sparsity=0.5), 2, 3, seed=7)
        ctrl.start(opt)
        return model, opt, ctrl

    model_a, opt_a, ctrl_a = fresh()
    train_steps(model_a, ctrl_a, opt_a, 3)
    blob = copy.deepcopy({"model": model_a.state_dict(), "opt": opt_a.state_dict(), "ctrl": ctrl_a.state_dict()})
    train_steps(model_a, ctrl_a, opt_a, 4, seed=9)

    model_b, opt_b, ctrl_b = fresh()
    model_b.load_state_dict(blob["model"])
    opt_b.load_state_dict(blob["opt"])
    ctrl_b.load_state_dict(blob["ctrl"])
    assert ctrl_b.step == 3
    train_steps(model_b, ctrl_b, opt_b, 4, seed=9)
    assert all(torch.equal(ctrl_a.keep[k], ctrl_b.keep[k]) for k in ctrl_a.keep)
    assert [e["kept"] for e in ctrl_a.events] == [e["kept"] for e in ctrl_b.events]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(ctrl_b.events) == 4 and ctrl_b.event_seconds > 0
    json.dumps(ctrl_b.events)  # events are plain JSON
    with pytest.raises(ValueError, match="not a PruningController state_dict"):
        ctrl_b.load_state_dict({"step": 3})


def test_clear_errors():
    model, graph = linear_net(6, 4), linear_graph(6, 4)

    class WrongCount(Strategy):
        def prune(self, state, group, keep):
            return torch.ones(group.size, dtype=torch.bool)

    ctrl = PruningController(model, graph, WrongCount(), pk.Budget(sparsity=0.5), 1, 1)
    with pytest.raises(ValueError, match=r"WrongCount.prune\(\) kept 4 channels of group '0'.*exactly 2"):
        ctrl.start(None)

    class BadRegrow(Strategy):
        def prune(self, state, group, keep):
            return top_k_mask(torch.arange(group.size).float(), keep)

        def regrow_fraction(self, state):
            return 0.5

        def regrow(self, state, group, count):
            return torch.tensor([3])  # already active

    ctrl = PruningController(model, graph, BadRegrow(), pk.Budget(sparsity=0.5), 1, 1)
    with pytest.raises(ValueError, match="not pruned"):
        ctrl.start(None)
    with pytest.raises(TypeError, match="get_strategy"):
        PruningController(model, graph, "chex", pk.Budget(sparsity=0.5), 1, 1)
    with pytest.raises(RuntimeError, match="start"):
        PruningController(model, graph, WrongCount(), pk.Budget(sparsity=0.5), 1, 1).after_optimizer_step()
    with pytest.raises(ValueError, match="minimum"):
        PruningController(model, graph, pk.get_strategy("random"), pk.Budget(macs=0.01), 1, 1).start(None)


DDP_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from conftest_strategies import conv_net, conv_graph
import prunekit as pk
from prunekit.controller import PruningController
dist.init_process_group("gloo")
rank = dist.get_rank()
model = conv_net()
graph = conv_graph(model)
# a different seed per rank: only the broadcast from rank 0 makes the masks agree
ctrl = PruningController(model, graph, pk.get_strategy("random"), pk.Budget(sparsity=0.5), 1, 1, seed=rank)
ctrl.start(None)
flat = torch.cat([ctrl.keep[g.id] for g in graph.groups]).int()
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
dist.destroy_process_group()
if rank == 0:  # outside torch.distributed: what seed 0 alone chooses
    mine = PruningController(conv_net(), graph, pk.get_strategy("random"), pk.Budget(sparsity=0.5), 1, 1, seed=0)
    mine.start(None)
    ref = torch.cat([mine.keep[g.id] for g in graph.groups]).int()
    other = PruningController(conv_net(), graph, pk.get_strategy("random"), pk.Budget(sparsity=0.5), 1, 1, seed=1)
    other.start(None)
    differs = not torch.equal(torch.cat([other.keep[g.id] for g in graph.groups]).int(), ref)
    print("SAME" if differs and all(torch.equal(g, ref) for g in gathered) else "DIFFERENT")
"""


def test_ddp_ranks_get_rank0_masks(tmp_path):
    script = tmp_path / "ddp_masks.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests")))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SAME" in r.stdout


def test_overhead_benchmark_quick(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "overhead.json").read_text())
    assert {"command", "machine", "events", "steps"} <= set(data)
    assert {e["model"] for e in data["events"]} == {"resnet18", "resnet56"}
    for e in data["events"]:
        assert e["event_s"] > 0 and e["epoch_s"] > 0 and 0 < e["fraction_of_epoch"] < 1
    for s in data["steps"]:
        assert s["dense_s"] > 0 and s["masked_s"] > 0
    md = (tmp_path / "overhead.md").read_text()
    assert "resnet56" in md and "--quick" in md


def test_prune_may_not_keep_an_inactive_channel():
    """prune() chooses among the active channels; a pruned channel comes back only through regrow()."""
    model, graph = linear_net(6, 4), linear_graph(6, 4)

    class Reviver(Strategy):
        def schedule(self, spe, epochs):
            return Schedule((0, 1))

        def allocate(self, state, budget):
            return {"0": 2}

        def prune(self, state, group, keep):
            keep_at = {0: [True, True, False, False], 1: [False, True, True, False]}  # step 1 keeps pruned channel 2
            return torch.tensor(keep_at[state.step])

    ctrl = PruningController(model, graph, Reviver(), pk.Budget(sparsity=0.5), 1, 2)
    ctrl.start(None)
    with pytest.raises(ValueError, match=r"Reviver.prune\(\) kept channels of group '0' that were not active \(\[2\]"):
        ctrl.after_optimizer_step()


def test_regrow_allocation_honours_groups_held_by_the_macs_bisection():
    """At a MACs budget the bisection can hold a group at a count (docs/strategies.md, Budgets); the regrow
    allocation at S - delta holds it too, as the prune allocation does: the group ends the event at that count."""
    from prunekit.models import build_model

    net = build_model("resnet56", num_classes=10, in_channels=3, input_size=32)
    graph = pk.build_graph(net, torch.zeros(1, 3, 32, 32))
    # coupled="mean": the residual streams are ranked too, which is where this budget makes the bisection hold
    # a group (with the default "fixed" it holds none here)
    chex = pk.get_strategy("chex", delta_T=1, T_max=4, coupled="mean")
    ctrl = PruningController(net, graph, chex, pk.Budget(macs=0.5), 1, 5)
    ctrl.start(None)
    with torch.no_grad():  # give the BN scales some spread, as training would
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(m.num_features)))
    ctrl.after_optimizer_step()
    event = ctrl.events[-1]
    assert event["regrow_fraction"] > 0 and event["held_groups"] >= 1 and ctrl.held
    for gid, count in ctrl.held.items():
        assert event["groups"][gid]["allocated"] == count
        assert event["groups"][gid]["active_after"] == count, (gid, event["groups"][gid])


def test_weights_rezeroed_when_the_step_cannot_be_trusted_to_keep_zeros():
    """after_optimizer_step skips re-zeroing weights and optimizer state only when the gradients were masked
    and the optimizer is exactly SGD/Adam/AdamW; otherwise (no after_backward, or any other optimizer, a
    subclass of SGD included) it re-zeroes them."""

    class NoisySGD(torch.optim.SGD):  # moves every weight, zero or not
        @torch.no_grad()
        def step(self, closure=None):
            super().step(closure)
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(0.01)

    for make_opt, call_after_backward in (
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3), False),
        (lambda p: NoisySGD(p, lr=0.1, momentum=0.9), True),
    ):
        model = conv_net()
        graph = conv_graph(model)
        opt = make_opt(model.parameters())
        ctrl = PruningController(model, graph, pk.get_strategy("magnitude"), pk.Budget(sparsity=0.5), 2, 4, seed=0)
        ctrl.start(opt)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8, generator=g)), torch.tensor([0, 1, 2, 0]))
            opt.zero_grad()
            loss.backward()
            if call_after_backward:
                ctrl.after_backward()
            opt.step()
            ctrl.after_optimizer_step()
        _check_enforced(model, graph, ctrl.keep, opt)
