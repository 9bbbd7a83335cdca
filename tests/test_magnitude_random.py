"""The magnitude and random baselines: which channels they keep, their allocations, schedules and seeding."""

import pytest
import torch
from conftest_strategies import (
    MultiNet,
    conv_graph,
    conv_net,
    linear_graph,
    linear_net,
    make_state,
    multi_graph,
    one_thread,  # noqa: F401  (fixture)
    train_steps,
)

import prunekit as pk
from prunekit.controller import PruningController

pytestmark = pytest.mark.usefixtures("one_thread")


def _kept(mask):
    return set(torch.nonzero(mask).flatten().tolist())


def test_magnitude_keeps_largest_norms():
    model, graph = linear_net(6, 6), linear_graph(6, 6)
    w = torch.tensor([[3.0, 0, 0, 0, 0, 0], [1.0, 1, 1, 0, 0, 0], [0.5, 0, 0, 0, 0, 0],
                      [2.0, 0, 0, 0, 0, 0], [1.2, 1.2, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0]])  # fmt: skip
    with torch.no_grad():
        model[0].weight.copy_(w)
    st = make_state(model, graph)
    grp = graph.groups[0]
    # L1: 3, 3, 0.5, 2, 2.4, 0.1 ; L2: 3, 1.73, 0.5, 2, 1.70, 0.1
    assert _kept(pk.get_strategy("magnitude").prune(st, grp, 3)) == {0, 1, 4}
    assert _kept(pk.get_strategy("magnitude", norm="l2").prune(st, grp, 3)) == {0, 1, 3}
    with torch.no_grad():  # members=all also counts the consumer columns and BN
        model[3].weight.zero_()
        model[3].weight[:, 5] = 100.0
    assert 5 in _kept(pk.get_strategy("magnitude", members="all").prune(st, grp, 3))
    assert 5 not in _kept(pk.get_strategy("magnitude").prune(st, grp, 3))


def test_magnitude_global_allocation_by_normalized_scores():
    sizes = [4, 4]
    model, graph = MultiNet(sizes), multi_graph(sizes)
    with torch.no_grad():
        w0 = torch.zeros(4, 8)
        w0[:, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0])  # normalized: 1, 1, 1, 1
        w1 = torch.zeros(4, 8)
        w1[:, 0] = torch.tensor([100.0, 100.0, 10.0, 10.0])  # mean 55: 1.82, 1.82, 0.18, 0.18
        model.branches[0][0].weight.copy_(w0)
        model.branches[1][0].weight.copy_(w1)
    st = make_state(model, graph)
    counts = pk.get_strategy("magnitude", allocation="global").allocate(st, pk.Budget(sparsity=0.25))
    assert counts == {"branches.0.0": 4, "branches.1.0": 2}  # large raw scale does not protect group 1
    assert pk.get_strategy("magnitude").allocate(st, pk.Budget(sparsity=0.25)) == {
        "branches.0.0": 3, "branches.1.0": 3,
    }  # fmt: skip


def test_magnitude_prunes_at_the_configured_step_and_never_regrows():
    model = conv_net()
    graph = conv_graph(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctrl = PruningController(model, graph, pk.get_strategy("magnitude", prune_step=4), pk.Budget(sparsity=0.5), 2, 4)
    ctrl.start(opt)
    assert all(bool(m.all()) for m in ctrl.keep.values())  # dense until step 4
    train_steps(model, ctrl, opt, 3)
    assert ctrl.events == []
    train_steps(model, ctrl, opt, 5)
    assert [e["step"] for e in ctrl.events] == [4] and ctrl.events[0]["regrown"] == 0
    assert {g: int(m.sum()) for g, m in ctrl.keep.items()} == {g.id: g.size // 2 for g in graph.groups}


def test_random_is_uniform_seeded_and_unbiased():
    model = conv_net()
    graph = conv_graph(model)

    def masks(seed):
        ctrl = PruningController(model, graph, pk.get_strategy("random"), pk.Budget(sparsity=0.5), 1, 1, seed=seed)
        ctrl.start(None)
        return ctrl.keep

    a, b, c = masks(3), masks(3), masks(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert {k: int(m.sum()) for k, m in a.items()} == {g.id: g.size // 2 for g in graph.groups}
    # each channel is kept about half of the time
    lin, lgraph = linear_net(4, 10), linear_graph(4, 10)
    st = make_state(lin, lgraph)
    freq = torch.zeros(10)
    for _ in range(600):
        freq += pk.get_strategy("random").prune(st, lgraph.groups[0], 5).float()
    assert bool(((freq / 600 - 0.5).abs() < 0.1).all()), freq / 600


def test_magnitude_at_a_fraction_of_training_prunes_once_there():
    """``at: 0.5``: dense for the first half of the steps, pruned to S at the middle, fine-tuned after."""
    model = conv_net()
    graph = conv_graph(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    strategy = pk.get_strategy("magnitude", at=0.5)
    assert strategy.schedule(2, 4).steps == (4,) and pk.get_strategy("magnitude").schedule(2, 4).steps == (0,)
    ctrl = PruningController(model, graph, strategy, pk.Budget(sparsity=0.5), 2, 4)
    ctrl.start(opt)
    train_steps(model, ctrl, opt, 3)
    assert ctrl.events == [] and all(bool(m.all()) for m in ctrl.keep.values())  # dense until step 4
    train_steps(model, ctrl, opt, 1, seed=1)  # the 4th optimizer step: the event runs right after it
    assert [e["step"] for e in ctrl.events] == [4]
    # the filters as the event saw them (the MRU snapshot it took: everything was live)
    w = {g.id: ctrl.mru.values[(g.producers[0], "weight")].abs().flatten(1).sum(1) for g in graph.groups}
    for g in graph.groups:  # the channels with the largest L1 norm of the trained filters
        assert _kept(ctrl.keep[g.id]) == set(torch.topk(w[g.id], g.size // 2).indices.tolist())
        assert bool((model.get_submodule(g.producers[0]).weight[~ctrl.keep[g.id]] == 0).all())
    train_steps(model, ctrl, opt, 4, seed=2)
    assert len(ctrl.events) == 1 and ctrl.events[0]["regrown"] == 0
    assert {g: int(m.sum()) for g, m in ctrl.keep.items()} == {g.id: g.size // 2 for g in graph.groups}


def test_magnitude_gradual_follows_the_cubic_schedule_and_ends_at_s():
    """Zhu & Gupta (2017): s_k = S (1 - (1 - k/n)^3) at n evenly spaced steps from ``at`` to ``end``."""
    from prunekit.strategies.magnitude import cubic_sparsity

    from prunekit.strategy import uniform_counts

    model = conv_net()
    graph = conv_graph(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    strategy = pk.get_strategy("magnitude", at=0.25, end=0.75, events=4)
    assert strategy.schedule(4, 4).steps == (6, 8, 10, 12)  # 16 steps: from step 4 to step 12, every 2
    ctrl = PruningController(model, graph, strategy, pk.Budget(sparsity=0.5), 4, 4)
    ctrl.start(opt)
    train_steps(model, ctrl, opt, 5)
    assert ctrl.events == [] and all(bool(m.all()) for m in ctrl.keep.values())
    train_steps(model, ctrl, opt, 11, seed=1)
    assert [e["step"] for e in ctrl.events] == [6, 8, 10, 12]
    for k, e in enumerate(ctrl.events, start=1):
        s_k = 0.5 * (1 - (1 - k / 4) ** 3)
        assert cubic_sparsity(k, 4, 0.5) == pytest.approx(s_k)
        assert e["prune_sparsity"] == pytest.approx(s_k)
        assert e["kept"] == uniform_counts(graph, pk.Budget(sparsity=s_k)), k
        assert e["regrown"] == 0 and all(g["kept_by_prune"] <= g["active_before"] for g in e["groups"].values())
    totals = [e["kept_total"] for e in ctrl.events]
    assert totals == sorted(totals, reverse=True) and totals[0] < graph.total_channels
    assert {g: int(m.sum()) for g, m in ctrl.keep.items()} == {g.id: g.size // 2 for g in graph.groups}  # S


def test_magnitude_gradual_meets_a_macs_budget_at_the_end():
    from prunekit.models import build_model

    net = build_model("resnet20", num_classes=10, in_channels=1, input_size=8)
    graph = pk.build_graph(net, torch.zeros(1, 1, 8, 8))
    for allocation in ("uniform", "global"):
        strategy = pk.get_strategy("magnitude", at=0.0, end=0.5, events=3, allocation=allocation)
        ctrl = PruningController(net, graph, strategy, pk.Budget(macs=0.3), 2, 6)
        ctrl.start(None)
        for _ in range(12):
            ctrl.after_optimizer_step()
        assert [e["step"] for e in ctrl.events] == [2, 4, 6]
        fractions = [e["macs_fraction"] for e in ctrl.events]
        assert fractions == sorted(fractions, reverse=True) and fractions[0] > 0.3 * 1.01
        assert abs(fractions[-1] - 0.3) <= 0.01 * 0.3, fractions


def test_magnitude_schedule_parameters_are_checked():
    with pytest.raises(ValueError, match="prune_step.*at/end"):
        pk.get_strategy("magnitude", prune_step=5, at=0.5)
    with pytest.raises(ValueError, match="end .* must be after at"):
        pk.get_strategy("magnitude", at=0.5, end=0.5)
    with pytest.raises(ValueError, match="'at'"):
        pk.get_strategy("magnitude", at=1.5)
    assert pk.get_strategy("magnitude", prune_step=5).schedule(10, 2).steps == (5,)
