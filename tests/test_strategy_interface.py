"""The Strategy interface: parameter declaration and validation, Budget, Schedule, the base-class
defaults (uniform allocation, no regrow, one-shot schedule), allocation helpers and channel matrices."""

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
)
from prunekit.graphs import ChannelGraph, ChannelGroup, Member

import prunekit as pk
from prunekit.controller import PruningController
from prunekit.strategy import (
    Param,
    ParamError,
    Schedule,
    Strategy,
    global_ranking_counts,
    top_k_mask,
    uniform_counts,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Tuned(Strategy):
    """A strategy with one parameter of each kind."""

    params = {
        "rate": Param(float, 0.3, min=0, max=1, help="a fraction"),
        "every": Param(int, 2, min=1),
        "mode": Param(str, "fast", choices=("fast", "slow")),
        "flag": Param(bool, False),
        "limit": Param(float, None, min=0, min_exclusive=True),
    }

    def prune(self, state, group, keep):
        return top_k_mask(state.channel_norms(group), keep)


def test_params_are_validated_and_converted():
    s = Tuned(rate=1, every=3.0, mode="slow", flag="true", limit="2.5")
    assert (s.rate, s.every, s.mode, s.flag, s.limit) == (1.0, 3, "slow", True, 2.5)
    assert isinstance(s.rate, float) and s.hparams["every"] == 3
    assert Tuned().hparams == Tuned.param_defaults() == {
        "rate": 0.3, "every": 2, "mode": "fast", "flag": False, "limit": None,
    }  # fmt: skip
    assert Tuned.description == "A strategy with one parameter of each kind."
    assert "rate=0.3" in repr(Tuned())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"rate": 1.5}, "'rate' must be <= 1, got 1.5"),
        ({"rate": "abc"}, "'rate' must be a float, got 'abc'"),
        ({"rate": True}, "'rate' must be a float"),
        ({"every": 0}, "'every' must be >= 1"),
        ({"every": 2.5}, "'every' must be an int"),
        ({"mode": "fats"}, "did you mean 'fast'"),
        ({"flag": "maybe"}, "'flag' must be a bool"),
        ({"limit": 0}, "'limit' must be > 0"),
        ({"rate": float("nan")}, "finite"),
        ({"rtae": 0.1}, "has no parameter 'rtae'; did you mean 'rate'"),
        ({"every": None}, "'every' must be an int, got None"),
    ],
)
def test_param_errors_name_the_parameter(kwargs, message):
    with pytest.raises(ParamError, match=message.replace("(", r"\(")):
        Tuned(**kwargs)
    assert issubclass(ParamError, ValueError) and issubclass(ParamError, TypeError)


def test_strategy_declarations_are_checked():
    with pytest.raises(TypeError, match="must be a prunekit.strategy.Param"):
        type("Bad", (Strategy,), {"params": {"x": 1}, "prune": lambda *a: None})
    with pytest.raises(TypeError, match="shadow the method regrow"):
        type("Bad", (Strategy,), {"params": {"regrow": Param(str, "x")}, "prune": lambda *a: None})
    with pytest.raises(ParamError, match="must be <= 1"):  # a bad default fails at class creation
        type("Bad", (Strategy,), {"params": {"x": Param(float, 2.0, max=1)}, "prune": lambda *a: None})
    with pytest.raises(TypeError, match="abstract"):
        Strategy()


def test_budget_validation_and_rounding():
    for kwargs, msg in [
        ({}, "exactly one of sparsity"),
        ({"sparsity": 0.5, "macs": 0.5}, "exactly one"),
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": -0.1}, "sparsity must be in"),
        ({"macs": 0}, "fraction of dense MACs to KEEP"),
        ({"macs": 30}, "write macs=0.7"),
        ({"sparsity": 0.5, "round_to": 0}, "round_to must be an integer >= 1"),
        ({"sparsity": 0.5, "round_to": 2.0}, "round_to must be an integer"),
        ({"sparsity": "half"}, "must be a number"),
    ]:
        with pytest.raises(ValueError, match=msg):
            pk.Budget(**kwargs)
    b = pk.Budget(sparsity=0.5, round_to=8)
    assert b.round_keep(20, 64) == 24 and b.round_keep(19.9, 64) == 16 and b.round_keep(1, 64) == 8
    assert b.round_keep(5, 6) == 6 and b.round_keep(64, 64) == 64 and b.round_keep(63.5, 64) == 64
    assert pk.Budget(sparsity=0.5).round_keep(0.2, 10) == 1  # at least one channel
    assert b.with_sparsity(0.3) == pk.Budget(sparsity=0.3, round_to=8)
    assert pk.Budget(macs=0.5).describe() == "MACs 0.5"
    assert pk.Budget(latency=0.6, round_to="auto").describe() == "latency 0.6, round_to auto"
    assert pk.Budget(sparsity=0.25, round_to=8).describe() == "sparsity 0.25, round_to 8"


def test_schedule():
    assert Schedule.once().steps == (0,) and 0 in Schedule.once()
    assert Schedule.every(3, 10).steps == (0, 3, 6, 9, 10)
    assert Schedule.every(5, 10, start=5, include_stop=False).steps == (5, 10)
    assert Schedule((5, 1, 1)).steps == (1, 5) and Schedule((5, 1)).last == 5
    with pytest.raises(ValueError, match=">= 0"):
        Schedule((-1,))
    with pytest.raises(ValueError, match="interval"):
        Schedule.every(0, 10)


def test_minimal_strategy_implements_only_prune():
    class L1(Strategy):
        """Keep the channels with the largest L1 norm."""

        def prune(self, state, group, keep):
            return top_k_mask(state.channel_norms(group, p=1), keep)

    model = conv_net()
    graph = conv_graph(model)
    l1 = {g.id: model.get_submodule(g.producers[0]).weight.detach().abs().flatten(1).sum(1) for g in graph.groups}
    ctrl = PruningController(model, graph, L1(), pk.Budget(sparsity=0.5), 4, 2)
    assert ctrl.schedule.steps == (0,)  # one-shot at the start
    ctrl.start(torch.optim.SGD(model.parameters(), lr=0.1))
    for g in graph.groups:  # uniform allocation, top L1
        assert int(ctrl.keep[g.id].sum()) == g.size // 2
        assert set(torch.nonzero(ctrl.keep[g.id]).flatten().tolist()) == set(
            torch.topk(l1[g.id], g.size // 2).indices.tolist()
        )
    for _ in range(8):
        ctrl.after_optimizer_step()
    assert len(ctrl.events) == 1 and ctrl.events[0]["regrown"] == 0


def test_uniform_counts_are_floor_or_ceil_and_track_the_total():
    sizes = [16, 16, 16, 16, 32, 32, 64]
    graph = multi_graph(sizes)
    for s in (0.1, 0.33, 0.5, 0.77):
        counts = uniform_counts(graph, pk.Budget(sparsity=s))
        for g in graph.groups:
            exact = (1 - s) * g.size
            assert int(exact) <= counts[g.id] <= int(exact) + 1
        assert abs(sum(counts.values()) - (1 - s) * sum(sizes)) <= len(sizes) / 2 + 1e-9


def test_global_ranking_counts_hand_example():
    graph = multi_graph([3, 2])
    scores = {"branches.0.0": torch.tensor([0.5, 0.1, 0.9]), "branches.1.0": torch.tensor([0.2, 0.3])}
    assert global_ranking_counts(graph, scores, pk.Budget(sparsity=0.4)) == {"branches.0.0": 2, "branches.1.0": 1}
    assert global_ranking_counts(graph, scores, pk.Budget(sparsity=0.8)) == {"branches.0.0": 1, "branches.1.0": 1}
    assert global_ranking_counts(graph, scores, pk.Budget(sparsity=0.0)) == {"branches.0.0": 3, "branches.1.0": 2}


def test_top_k_mask_breaks_ties_by_index():
    assert top_k_mask(torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0]), 2).tolist() == [False, True, True, False, False]


def test_channel_matrix_rows_are_filters_and_mru_source():
    model, graph = linear_net(5, 4), linear_graph(5, 4)
    grp = graph.groups[0]
    st = make_state(model, graph)
    assert torch.equal(st.channel_matrix(grp), model[0].weight.detach())
    both = st.channel_matrix(grp, params=("weight", "bias"))
    assert both.shape == (4, 6) and torch.equal(both[:, 5], model[0].bias.detach())
    assert torch.equal(st.channel_matrix(grp, roles=("in",)), model[3].weight.detach().T)
    w = model[0].weight.detach().clone()
    keep = {"0": torch.tensor([True, False, True, True])}
    st.mru.snapshot(model, graph.full_keep())
    pk.apply_masks(model, graph, keep)
    st.keep = keep
    assert bool((st.channel_matrix(grp)[1] == 0).all())  # live: pruned row is zero
    assert torch.equal(st.channel_matrix(grp, source="mru"), w)  # mru: what it would be if restored
    assert torch.allclose(st.channel_norms(grp, p=1), w.abs().sum(1) * torch.tensor([1.0, 0, 1, 1]))
    model.half()
    assert st.channel_matrix(grp).dtype == torch.float32
    m = MultiNet([3, 2])
    with torch.no_grad():
        m.branches[0][1].weight.copy_(torch.tensor([-0.5, 0.25, 1.0]))
    s2 = make_state(m, multi_graph([3, 2]))
    assert torch.allclose(s2.bn_scales(s2.graph.groups[0]), torch.tensor([0.5, 0.25, 1.0]))
    with pytest.raises(ValueError, match="source"):
        st.channel_matrix(grp, source="old")


def test_bn_scales_mru_source_and_max_over_coupled_norm_layers():
    m = MultiNet([3, 2])
    graph = multi_graph([3, 2])
    grp = graph.groups[0]
    with torch.no_grad():
        m.branches[0][1].weight.copy_(torch.tensor([-0.5, 0.25, 1.0]))
    st = make_state(m, graph)
    st.mru.snapshot(m, graph.full_keep())
    keep = {**graph.full_keep(), grp.id: torch.tensor([True, True, False])}
    pk.apply_masks(m, graph, keep)
    st.keep = keep
    assert torch.allclose(st.bn_scales(grp), torch.tensor([0.5, 0.25, 0.0]))  # live: the pruned gamma is 0
    assert torch.allclose(st.bn_scales(grp, source="mru"), torch.tensor([0.5, 0.25, 1.0]))  # as last active
    # a channel shared by two norm layers (as on a residual stream): mean or max of their |gamma|
    two = ChannelGroup(
        "two", 3,
        [Member("branches.0.1", "weight", 0, torch.arange(3), torch.arange(3), "norm"),
         Member("branches.1.1", "weight", 0, torch.arange(2), torch.arange(2), "norm")],
        producers=["branches.0.0"],
    )  # fmt: skip
    with torch.no_grad():
        m.branches[1][1].weight.copy_(torch.tensor([2.0, -0.05]))
    st2 = make_state(m, ChannelGraph([two], [], "two"))
    assert torch.allclose(st2.bn_scales(two), torch.tensor([1.25, 0.15, 0.0]))  # mean over the layers present
    assert torch.allclose(st2.bn_scales(two, reduce="max"), torch.tensor([2.0, 0.25, 0.0]))
    with pytest.raises(ValueError, match="reduce"):
        st2.bn_scales(two, reduce="sum")
