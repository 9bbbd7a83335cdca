"""CHEX pinned against hand-computed values: cosine schedule, percentile allocation, CSS with duplicated
channels, orthogonality of copies, regrow sampling frequencies, numerics (fp16/bf16, rank-deficient,
all-zero, tiny groups), ablation flags and a whole run through the controller."""

import math

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
from prunekit.strategies.chex import (
    CHEX,
    cosine_delta,
    leverage_scores,
    orthogonality,
    sample_without_replacement,
)

import prunekit as pk
from prunekit.controller import PruningController

pytestmark = pytest.mark.usefixtures("one_thread")

# -- schedule ------------------------------------------------------------------------------------------


def test_cosine_schedule_values():
    d0, T = 0.3, 180
    assert cosine_delta(0, T, d0) == pytest.approx(0.3)
    assert cosine_delta(T / 3, T, d0) == pytest.approx(0.5 * (1 + 0.5) * 0.3)  # cos(pi/3) = 1/2
    assert cosine_delta(T / 2, T, d0) == pytest.approx(0.15)
    assert cosine_delta(2 * T / 3, T, d0) == pytest.approx(0.5 * (1 - 0.5) * 0.3)
    assert cosine_delta(T, T, d0) == 0.0
    assert cosine_delta(T + 5, T, d0) == 0.0
    assert cosine_delta(10, 0, d0) == 0.0


def test_schedule_defaults_follow_the_paper():
    # 250 epochs, T_max = 0.72 * 250 = 180 epochs, every 2 epochs: 0 (init), 2, 4, ..., 180
    s = CHEX().schedule(steps_per_epoch=10, epochs=250)
    assert s.steps == tuple([0] + [20 * k for k in range(1, 91)])
    assert s.last == 1800


def test_schedule_ends_exactly_at_t_max_and_regrow_fraction_uses_it():
    chex = CHEX(delta_T=2, T_max=7)
    s = chex.schedule(steps_per_epoch=5, epochs=10)
    assert s.steps == (0, 10, 20, 30, 35)  # epochs 2, 4, 6 and T_max = 7
    m = linear_net(4, 6)
    st = make_state(m, linear_graph(4, 6), step=10, steps_per_epoch=5, epochs=10)
    assert chex.regrow_fraction(st) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 7)) * 0.3)
    st.step = 35
    assert chex.regrow_fraction(st) == 0.0
    st.step = 0
    assert chex.regrow_fraction(st) == 0.0 and chex.prune_slack(st) == pytest.approx(0.3)
    assert CHEX(unit="step", delta_T=3, T_max=10).schedule(5, 10).steps == (0, 3, 6, 9, 10)
    assert CHEX(explore=False).schedule(5, 10).steps == (0,)
    assert CHEX(T_max=0).schedule(5, 10).steps == (0,)
    with pytest.raises(ValueError, match="T_max"):
        CHEX(unit="step", T_max=2.5)


# -- allocation ----------------------------------------------------------------------------------------


def test_percentile_allocation_matches_hand_computation():
    sizes = [4, 4, 2]
    model = MultiNet(sizes)
    graph = multi_graph(sizes)
    gammas = [[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.05, 0.7], [0.6, 0.4]]
    with torch.no_grad():
        for b, g in zip(model.branches, gammas):
            b[1].weight.copy_(torch.tensor(g) * torch.tensor([1, -1, 1, -1][: len(g)]))  # |gamma| counts
    state = make_state(model, graph, step=5)
    # S = 0.4 of 10 channels: q = 4th smallest |gamma| = 0.3 -> pruned {0.1, 0.3 | 0.2, 0.05 | -}
    counts = CHEX().allocate(state, pk.Budget(sparsity=0.4))
    assert counts == {"branches.0.0": 2, "branches.1.0": 2, "branches.2.0": 2}
    # S = 0.7: q = 7th smallest = 0.6 -> pruned {0.1,0.5,0.3 | 0.2,0.05 | 0.6,0.4} -> keeps 1, 2, 1 (min 1)
    counts = CHEX().allocate(state, pk.Budget(sparsity=0.7))
    assert counts == {"branches.0.0": 1, "branches.1.0": 2, "branches.2.0": 1}
    # the paper's formula, kappa_l = |{i: |g_i| <= q}| / C_l, on the same numbers
    flat = sorted(abs(v) for g in gammas for v in g)
    q = flat[round(0.4 * 10) - 1]
    assert [sum(abs(v) <= q for v in g) for g in gammas] == [2, 2, 0]
    assert CHEX(allocation="uniform").allocate(state, pk.Budget(sparsity=0.5)) == {
        "branches.0.0": 2, "branches.1.0": 2, "branches.2.0": 1,
    }  # fmt: skip


def test_pruned_channels_rank_at_zero_by_default_and_by_their_mru_gamma_as_an_option():
    """The authors' code zeroes the BN gamma of pruned channels after every step (prune_utils.py
    apply_channel_mask), so their ranking sees them at 0; ``pruned_gamma: mru`` ranks them by their last |gamma|."""
    sizes = [4, 4]
    model = MultiNet(sizes)
    graph = multi_graph(sizes)
    with torch.no_grad():  # group 0 had strong channels 2, 3 before they were pruned; group 1 is weak
        model.branches[0][1].weight.copy_(torch.tensor([0.5, 0.4, 0.9, 0.8]))
        model.branches[1][1].weight.copy_(torch.tensor([0.3, 0.2, 0.1, 0.35]))
    state = make_state(model, graph)
    state.mru.snapshot(model, graph.full_keep())
    keep = {"branches.0.0": torch.tensor([True, True, False, False]), "branches.1.0": torch.ones(4, dtype=torch.bool)}
    pk.apply_masks(model, graph, keep)
    state.keep = keep
    budget = pk.Budget(sparsity=0.25)  # prune 2 of 8
    # default (zero): group 0's pruned channels rank lowest, so it cannot exceed its 2 active channels
    assert CHEX().pruned_gamma == "zero"
    assert CHEX().allocate(state, budget) == {"branches.0.0": 2, "branches.1.0": 4}
    # mru: they rank by the gammas they had (0.9, 0.8): the allocation gives group 0 all 4
    state.extra.clear()
    assert CHEX(pruned_gamma="mru").allocate(state, budget) == {"branches.0.0": 4, "branches.1.0": 2}


def _resnet20_state(seed=0):
    from prunekit.models import build_model

    net = build_model("resnet20", num_classes=10, in_channels=1, input_size=8)
    graph = pk.build_graph(net, torch.zeros(1, 1, 8, 8))
    with torch.no_grad():  # distinct BN scales, as training would give
        g = torch.Generator().manual_seed(seed)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.01)
    return net, graph, make_state(net, graph, step=5)


def test_coupled_option_mean_max_and_fixed():
    """``coupled``: residual streams (groups produced by several layers) ranked by the mean or the max |gamma|
    of their BN layers, or held at the budget's uniform width while the ranking allocates the other groups."""
    from prunekit.strategy import global_ranking_counts, is_coupled, uniform_counts

    net, graph, state = _resnet20_state()
    coupled = [g for g in graph.groups if is_coupled(g)]
    inner = [g for g in graph.groups if not is_coupled(g)]
    assert [g.size for g in coupled] == [16, 32, 64] and len(inner) == 9  # the three residual streams
    budget = pk.Budget(sparsity=0.6)
    mean = state.bn_scales(coupled[0], reduce="mean")
    assert torch.allclose(CHEX().channel_scores(state)[coupled[0].id], mean)
    state.extra.clear()
    assert torch.allclose(
        CHEX(coupled="max").channel_scores(state)[coupled[0].id], state.bn_scales(coupled[0], reduce="max")
    )
    state.extra.clear()
    fixed = CHEX(coupled="fixed").allocate(state, budget)
    uniform = uniform_counts(graph, budget)
    assert all(fixed[g.id] == uniform[g.id] for g in coupled)  # not re-allocated by the ranking
    n_inner = sum(g.size for g in inner)
    assert sum(fixed[g.id] for g in inner) == n_inner - round(0.6 * n_inner)  # ranked among themselves
    scores = CHEX().channel_scores(state)
    assert {g.id: fixed[g.id] for g in inner} == global_ranking_counts(graph, scores, budget, groups=inner)
    state.extra.clear()
    assert CHEX().coupled == "fixed"  # the default: docs/strategies.md, *Which coupled variant*
    ranked = CHEX(coupled="mean").allocate(state, budget)
    assert sum(ranked.values()) == graph.total_channels - round(0.6 * graph.total_channels)
    assert any(ranked[g.id] != uniform[g.id] for g in coupled)
    with pytest.raises(ValueError, match="coupled"):
        CHEX(coupled="sum")


def test_groups_without_bn_use_rescaled_l1():
    sizes = [4, 4]
    model = MultiNet(sizes, bn=[True, False])
    graph = multi_graph(sizes, bn=[True, False])
    with torch.no_grad():
        model.branches[0][1].weight.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0]))
        w = torch.zeros(4, 8)
        w[:, 0] = torch.tensor([0.1, 1.0, 1.0, 1.9])  # L1 norms 0.1, 1, 1, 1.9 -> mean 1
        model.branches[1][0].weight.copy_(w)
    scores = CHEX().channel_scores(make_state(model, graph))
    assert torch.allclose(scores["branches.1.0"], torch.tensor([0.1, 1.0, 1.0, 1.9]))  # mean |gamma| = 1
    counts = CHEX().allocate(make_state(model, graph), pk.Budget(sparsity=0.125))
    assert counts == {"branches.0.0": 4, "branches.1.0": 3}


# -- CSS -----------------------------------------------------------------------------------------------


def test_leverage_scores_match_svd():
    w = torch.randn(30, 12, generator=torch.Generator().manual_seed(1))
    _, _, vh = torch.linalg.svd(w.double(), full_matrices=False)
    for k in (1, 5, 12):
        ref = (vh[:k].T ** 2).sum(1).float()
        assert torch.allclose(leverage_scores(w, k), ref, atol=1e-5)
    assert leverage_scores(w, 12).sum().item() == pytest.approx(12, abs=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_css_never_keeps_two_copies_when_distinct_channels_are_available(seed):
    g = torch.Generator().manual_seed(seed)
    rows, distinct, copies = 24, 6, 3
    base = torch.randn(rows, distinct, generator=g) * torch.rand(distinct, generator=g).add(0.2)
    dup = int(torch.randint(distinct, (1,), generator=g))
    w = torch.cat([base, base[:, dup : dup + 1].repeat(1, copies)], 1)  # channel `dup` and 3 more copies
    perm = torch.randperm(w.shape[1], generator=g)
    w = w[:, perm]
    copy_cols = [int(i) for i in torch.nonzero((perm == dup) | (perm >= distinct)).flatten()]
    model, graph = linear_net(rows, w.shape[1]), linear_graph(rows, w.shape[1])
    with torch.no_grad():
        model[0].weight.copy_(w.T)
    state = make_state(model, graph, step=3)
    for keep in range(2, distinct + 1):
        mask = CHEX().prune(state, graph.groups[0], keep)
        assert int(mask.sum()) == keep
        assert int(mask[copy_cols].sum()) <= 1, (keep, copy_cols, torch.nonzero(mask).flatten().tolist())


def test_css_keeps_a_spanning_set_and_ignores_zero_columns():
    # columns: e0, e1, e0+e1 (dependent), 0, e2 ; keep 3 -> a basis, never the zero column
    w = torch.zeros(5, 5)
    w[0, 0] = w[1, 1] = w[2, 4] = 1.0
    w[0, 2] = w[1, 2] = 1.0
    model, graph = linear_net(5, 5), linear_graph(5, 5)
    with torch.no_grad():
        model[0].weight.copy_(w.T)
    mask = CHEX().prune(make_state(model, graph, step=2), graph.groups[0], 3)
    kept = w[:, mask]
    assert not bool(mask[3]) and bool(mask[4])
    assert int(torch.linalg.matrix_rank(kept)) == 3


def test_css_falls_back_to_l1_when_fewer_rows_than_columns():
    model, graph = linear_net(3, 8), linear_graph(3, 8)
    state = make_state(model, graph, step=2)
    l1 = model[0].weight.detach().abs().sum(1)
    mask = CHEX().prune(state, graph.groups[0], 3)
    assert set(torch.nonzero(mask).flatten().tolist()) == set(torch.topk(l1, 3).indices.tolist())


def test_css_sampling_option_gives_exact_counts():
    model, graph = linear_net(16, 8), linear_graph(16, 8)
    masks = [CHEX(selection="sampling").prune(make_state(model, graph, step=2, seed=s), graph.groups[0], 4)
             for s in range(5)]  # fmt: skip
    assert all(int(m.sum()) == 4 for m in masks)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_weights_are_handled_in_fp32(dtype):
    model, graph = linear_net(16, 8), linear_graph(16, 8)
    ref = CHEX().prune(make_state(model, graph, step=2), graph.groups[0], 4)
    low = linear_net(16, 8).to(dtype)
    mask = CHEX().prune(make_state(low, graph, step=2), graph.groups[0], 4)
    assert int(mask.sum()) == 4 and torch.equal(mask, ref)
    st = make_state(low, graph, keep={"0": mask}, step=2)
    idx = CHEX().regrow(st, graph.groups[0], 2)
    assert len(idx) == 2 and not bool(mask[idx].any())


def test_degenerate_matrices():
    model, graph = linear_net(6, 6), linear_graph(6, 6)
    grp = graph.groups[0]
    with torch.no_grad():
        model[0].weight.zero_()
    st = make_state(model, graph, step=2)
    assert int(CHEX().prune(st, grp, 2).sum()) == 2  # all-zero: no NaN, exact count
    assert torch.equal(CHEX().prune(st, grp, 6), torch.ones(6, dtype=torch.bool))  # group not above k
    assert torch.equal(CHEX().prune(st, grp, 9), torch.ones(6, dtype=torch.bool))
    assert torch.equal(orthogonality(torch.zeros(6, 3), torch.eye(6)[:, :2]), torch.ones(2))
    assert leverage_scores(torch.zeros(6, 4), 2).sum() == 0
    # rank-deficient active set: projection onto its true 1-d span
    a = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    eps = orthogonality(a, torch.tensor([[3.0, 1.0], [3.0, 0.0], [0.0, 0.0]]))
    assert eps[0] == 0 and eps[1] == pytest.approx(math.sqrt(0.5), rel=1e-5)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        CHEX().prune(make_state(model, graph, step=2), grp, 2)


# -- regrow --------------------------------------------------------------------------------------------


def test_orthogonality_matches_least_squares():
    g = torch.Generator().manual_seed(3)
    a, c = torch.randn(20, 5, generator=g), torch.randn(20, 7, generator=g)
    sol = torch.linalg.lstsq(a.double(), c.double()).solution
    ref = (c.double() - a.double() @ sol).norm(dim=0).float()
    assert torch.allclose(orthogonality(a, c), ref, rtol=1e-4)


def _regrow_setup(copy_of_active: bool = True):
    """8 channels, channels 0-3 active; MRU filters of 4 and 5 are copies of active channels (4 = 2 * ch0,
    5 = ch1 + ch2), 6 and 7 are outside the span."""
    rows = 12
    model, graph = linear_net(rows, 8), linear_graph(rows, 8)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(rows, 8, generator=g)
    w[:, 4] = 2 * w[:, 0]
    w[:, 5] = w[:, 1] + w[:, 2]
    with torch.no_grad():
        model[0].weight.copy_(w.T)
    keep = {"0": torch.tensor([True] * 4 + [False] * 4)}
    state = make_state(model, graph, keep=keep, step=2)
    state.mru.snapshot(model, graph.full_keep())  # MRU = the filters above
    pk.apply_masks(model, graph, keep)  # pruned filters are zero in the live model
    return model, graph, state, w


def test_copy_of_an_active_channel_has_orthogonality_zero_and_is_never_regrown():
    model, graph, state, w = _regrow_setup()
    eps = orthogonality(w[:, :4], w[:, 4:])
    assert eps[0] == 0 and eps[1] == 0 and bool((eps[2:] > 0).all())
    chex = CHEX()
    for seed in range(200):
        state.generator.manual_seed(seed)
        picked = chex.regrow(state, graph.groups[0], 2).tolist()
        assert sorted(picked) == [6, 7]
    # asking for more than the candidates with eps > 0: those two plus random fill
    seen = set()
    for seed in range(30):
        state.generator.manual_seed(seed)
        picked = chex.regrow(state, graph.groups[0], 3).tolist()
        assert {6, 7} <= set(picked) and len(set(picked)) == 3
        seen |= set(picked)
    assert seen == {4, 5, 6, 7}


def _captured_probabilities(monkeypatch, chex, state, group, count=1):
    """The probability vector that ``chex.regrow`` hands to the sampler."""
    import prunekit.strategies.chex as mod

    seen = []
    real = mod.sample_without_replacement

    def spy(p, n, generator):
        seen.append(p.clone())
        return real(p, n, generator)

    monkeypatch.setattr(mod, "sample_without_replacement", spy)
    chex.regrow(state, group, count)
    monkeypatch.setattr(mod, "sample_without_replacement", real)
    return seen[0]


def test_regrow_frequencies_follow_orthogonality_probabilities(monkeypatch):
    model, graph, state, w = _regrow_setup()
    eps = orthogonality(w[:, :4], w[:, 4:]).double()
    p = _captured_probabilities(monkeypatch, CHEX(), state, graph.groups[0])
    assert torch.allclose(p, eps / eps.sum()) and p[0] == 0 and p[1] == 0
    n = 5000  # the sampler with those probabilities and the run's generator: chi-square test
    counts = torch.zeros(4, dtype=torch.float64)
    state.generator.manual_seed(1234)
    for _ in range(n):
        counts[sample_without_replacement(p, 1, state.generator)] += 1
    assert counts[0] == 0 and counts[1] == 0
    expected = p[2:] * n
    chi2 = float((((counts[2:] - expected) ** 2) / expected).sum())
    assert chi2 < 10.83, (counts, expected)  # 1 degree of freedom, p = 0.001
    state.generator.manual_seed(99)  # and end to end through regrow (fewer draws, same law)
    hits = sum(int(CHEX().regrow(state, graph.groups[0], 1)) == 7 for _ in range(300))
    assert abs(hits / 300 - float(p[3])) < 4 * math.sqrt(float(p[3] * (1 - p[3])) / 300)


def test_sampling_without_replacement_frequencies():
    p = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    g = torch.Generator().manual_seed(7)
    n = 6000
    counts = torch.zeros(5)
    for _ in range(n):
        counts[sample_without_replacement(p, 1, g)] += 1
    expected = p[1:] / p.sum() * n
    chi2 = float((((counts[1:] - expected) ** 2) / expected).sum())
    assert counts[0] == 0 and chi2 < 16.27  # 3 degrees of freedom, p = 0.001
    assert sorted(sample_without_replacement(p, 5, g).tolist()) == [0, 1, 2, 3, 4]


def test_softmax_option_and_random_regrow(monkeypatch):
    model, graph, state, w = _regrow_setup()
    eps = orthogonality(w[:, :4], w[:, 4:]).double()
    p = _captured_probabilities(monkeypatch, CHEX(probabilities="softmax"), state, graph.groups[0])
    assert torch.allclose(p, torch.softmax(eps, 0))  # > 0 everywhere: copies can come back (authors' code)
    assert bool((p > 0).all())
    state.generator.manual_seed(0)
    idx = CHEX(regrow_by="random").regrow(state, graph.groups[0], 3)
    assert len(set(idx.tolist())) == 3 and set(idx.tolist()) <= {4, 5, 6, 7}


# -- through the controller ----------------------------------------------------------------------------


def _run(params, sparsity=0.5, steps=10, seed=0, epochs=4, strategy=CHEX):
    model = conv_net()
    graph = conv_graph(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctrl = PruningController(model, graph, strategy(**params), pk.Budget(sparsity=sparsity), 3, epochs, seed=seed)
    ctrl.start(opt)
    start_keep = {k: v.clone() for k, v in ctrl.keep.items()}
    train_steps(model, ctrl, opt, steps)
    return ctrl, graph, start_keep, model


def test_chex_run_starts_at_s_minus_delta0_by_l1_and_ends_at_s():
    model = conv_net()
    graph = conv_graph(model)
    n = graph.total_channels  # 8 + 16 + 8 = 32
    l1 = {g.id: model.get_submodule(g.producers[0]).weight.detach().abs().flatten(1).sum(1) for g in graph.groups}
    ctrl, graph, start_keep, _ = _run({"delta_T": 1, "T_max": 3})
    for g in graph.groups:  # uniform widths at S - delta_0 = 0.2, channels with the largest L1 norm
        k = int(start_keep[g.id].sum())
        assert k in (math.floor(0.8 * g.size), math.ceil(0.8 * g.size))
        assert set(torch.nonzero(start_keep[g.id]).flatten().tolist()) == set(torch.topk(l1[g.id], k).indices.tolist())
    assert [e["step"] for e in ctrl.events] == [0, 3, 6, 9]
    assert [e["kind"] for e in ctrl.events] == ["start", "prune+regrow", "prune+regrow", "prune"]
    assert ctrl.events[1]["regrown"] > 0 and ctrl.events[-1]["regrown"] == 0
    assert ctrl.events[-1]["kept_total"] == n - round(0.5 * n)  # exactly S at T_max
    assert all(int(m.sum()) == c for m, c in zip(ctrl.keep.values(), ctrl.events[-1]["kept"].values()))


def test_ablations():
    ctrl, *_ = _run({"delta_T": 1, "T_max": 3, "regrow_by": "none"})
    assert all(e["regrown"] == 0 for e in ctrl.events)
    ctrl, *_ = _run({"explore": False}, steps=1)
    assert len(ctrl.events) == 1 and ctrl.events[0]["kept_total"] == 16
    ctrl, graph, *_ = _run({"delta_T": 1, "T_max": 3, "allocation": "uniform"})
    assert ctrl.events[-1]["kept"] == {g.id: g.size // 2 for g in graph.groups}


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_without_exploration_chex_is_magnitude_pruning(sparsity):
    """docs/strategies.md: explore=false prunes once by the L1 norm with uniform widths, i.e. magnitude's
    defaults; a comparison's chex - magnitude difference is then what exploration does."""
    from prunekit.strategies.magnitude import Magnitude

    chex, *_, chex_model = _run({"explore": False}, sparsity=sparsity, steps=3)
    mag, *_, mag_model = _run({}, sparsity=sparsity, steps=3, strategy=Magnitude)
    assert chex.keep.keys() == mag.keep.keys()
    assert all(torch.equal(chex.keep[k], mag.keep[k]) for k in chex.keep)
    assert not any(m.all() for m in chex.keep.values())  # something was pruned
    for a, b in zip(chex_model.state_dict().values(), mag_model.state_dict().values()):
        assert torch.equal(a, b)  # and the training that follows is the same


def test_same_seed_same_masks_and_regrown_values_are_mru():
    a, *_ = _run({"delta_T": 1, "T_max": 3}, seed=5)
    b, *_ = _run({"delta_T": 1, "T_max": 3}, seed=5)
    assert all(torch.equal(a.keep[k], b.keep[k]) for k in a.keep)
    assert [e["kept"] for e in a.events] == [e["kept"] for e in b.events]


# -- the prune step keeps only active channels (regression: an allocation above the active count) ---------


def _over_allocated_event(regrow_by, monkeypatch=None):
    """An event at T_max (delta = 0) where the MRU ranking allocates group 0 more channels than it has
    active: its channels 2 and 3 were pruned while their |gamma| (0.9, 0.8) was the highest of the model.
    Before the fix the CSS top-k filled the extra slots with those dead channels (zero leverage, index order):
    they came back with their MRU values, without orthogonality sampling, and were not counted as regrown."""
    sizes = [4, 4]
    model, graph = MultiNet(sizes), multi_graph(sizes)
    with torch.no_grad():
        model.branches[0][1].weight.copy_(torch.tensor([0.5, 0.4, 0.9, 0.8]))
        model.branches[1][1].weight.copy_(torch.tensor([0.3, 0.2, 0.1, 0.35]))
    chex = CHEX(pruned_gamma="mru", regrow_by=regrow_by, unit="step", delta_T=1, T_max=1)
    ctrl = PruningController(model, graph, chex, pk.Budget(sparsity=0.25), 1, 2)
    ctrl.start(None)  # step 0: S - delta_0 < 0, all channels kept
    keep = {"branches.0.0": torch.tensor([True, True, False, False]), "branches.1.0": torch.ones(4, dtype=torch.bool)}
    ctrl.mru.snapshot(model, ctrl.keep)
    ctrl._set_keep(keep, ctrl.keep)
    calls = []
    if monkeypatch is not None:
        real = CHEX.regrow
        monkeypatch.setattr(
            CHEX, "regrow", lambda self, st, grp, n: calls.append((grp.id, n)) or real(self, st, grp, n)
        )
    ctrl.after_optimizer_step()  # the event at T_max = step 1: delta = 0
    return ctrl, keep, calls


def test_prune_step_never_keeps_an_inactive_channel_the_excess_is_regrown_by_orthogonality(monkeypatch):
    ctrl, before, calls = _over_allocated_event("orthogonality", monkeypatch)
    event = ctrl.events[-1]
    assert event["regrow_fraction"] == 0.0
    assert calls == [("branches.0.0", 2)]  # the excess went through regrow (orthogonality sampling)
    assert event["regrown"] == 2 and event["kind"] == "prune+regrow"
    g0 = event["groups"]["branches.0.0"]
    assert g0 == {"allocated": 4, "active_before": 2, "kept_by_prune": 2, "pruned": 0, "regrown": 2, "active_after": 4}


def test_regrow_by_none_revives_nothing_even_when_the_allocation_exceeds_the_active_channels():
    ctrl, before, _ = _over_allocated_event("none")
    event = ctrl.events[-1]
    assert event["regrown"] == 0
    for gid, mask in ctrl.keep.items():
        assert not bool((mask & ~before[gid]).any()), gid  # no channel came back
    assert event["groups"]["branches.0.0"]["active_after"] == 2


def test_events_record_per_group_counts_and_nothing_is_revived_outside_regrow(tmp_path):
    """A real run (digits, ResNet-20, 70% MACs reduction, an exploration step every quarter epoch):
    events.json holds per group active_before, kept_by_prune, pruned, regrown, active_after, with
    kept_by_prune <= active_before, pruned = active_before - kept_by_prune, active_after = kept_by_prune +
    regrown, and nothing changes between events (the next event starts from this one's active_after)."""
    import json
    from pathlib import Path

    from prunekit.config import load_config

    flags = {
        "train.epochs": 2, "train.seed": 0, "train.threads": 1, "prune.strategy": "chex", "prune.macs": 0.3,
        "prune.params": {"delta_T": 0.25}, "data.limit_train": 640, "data.limit_test": 128,
        "run.out": str(tmp_path), "run.name": "events", "run.progress": "off", "run.latency_runs": 1,
    }  # fmt: skip
    res = pk.run(load_config(None, flags=flags))
    assert res.status == "ok", res.error
    events = json.loads((Path(res.run_dir) / "events.json").read_text())
    assert len(events) >= 5
    prev = None
    for e in events:
        assert set(e["groups"]) == set(e["kept"])
        for gid, g in e["groups"].items():
            assert g["kept_by_prune"] <= g["active_before"], (e["step"], gid, g)
            assert g["pruned"] == g["active_before"] - g["kept_by_prune"], (e["step"], gid, g)
            assert g["active_after"] == g["kept_by_prune"] + g["regrown"], (e["step"], gid, g)
            assert g["active_after"] == e["kept"][gid]
            if prev is not None:
                assert g["active_before"] == prev["groups"][gid]["active_after"], (e["step"], gid)
        assert e["regrown"] == sum(g["regrown"] for g in e["groups"].values())
        prev = e
    assert events[-1]["regrow_fraction"] == 0.0
    assert abs(events[-1]["macs_fraction"] - 0.3) <= 0.01 * 0.3
    assert res.kept == events[-1]["kept"]
