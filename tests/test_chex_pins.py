"""CHEX pinned where test_chex.py leaves room: column subset selection on full-rank matrices whose L1 and
leverage orders differ (so top-k leverage cannot be confused with top-k L1 or with leverage over all
columns), the rank cut-off of the leverage scores (keep > rank), and the regrow count of an exploration
step, allocate(S - delta_t) - allocate(S), with delta_t computed here from the paper's cosine."""

import math

import pytest
import torch
from conftest_strategies import (
    conv_graph,
    conv_net,
    linear_graph,
    linear_net,
    make_state,
    one_thread,  # noqa: F401  (fixture)
)
from prunekit.strategies.chex import CHEX, leverage_scores

import prunekit as pk
from prunekit.controller import PruningController

pytestmark = pytest.mark.usefixtures("one_thread")


def _ref_leverage(w: torch.Tensor, k: int) -> torch.Tensor:
    """||V_k[j, :]||^2 for the top-k right singular vectors of w [rows, C], by torch.linalg.svd in float64."""
    _, _, vh = torch.linalg.svd(w.double(), full_matrices=False)
    return (vh[:k] ** 2).sum(0)


def _top(scores: torch.Tensor, k: int) -> set[int]:
    return set(torch.topk(scores, k).indices.tolist())


def _css_cases():
    """(seed, w [rows, C], keep): random full-rank w, columns scaled so that L1 norms vary, a clear gap
    between the k-th and (k+1)-th leverage score, and top-k leverage != top-k L1."""
    cases = []
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        rows, c = 16, 10
        w = torch.randn(rows, c, generator=g) * torch.rand(c, generator=g).add(0.3)
        w[:, : c // 2] += 0.8 * w[:, c // 2 :] @ torch.randn(c // 2, c // 2, generator=g)  # correlated columns
        assert int(torch.linalg.matrix_rank(w)) == c
        for keep in (3, 5, 7):
            lev = _ref_leverage(w, keep)
            s = lev.sort(descending=True).values
            if float(s[keep - 1] - s[keep]) < 1e-3:
                continue  # a near tie: float32 vs float64 could legitimately order it either way
            if _top(lev, keep) != _top(w.abs().sum(0), keep):
                cases.append((seed, w, keep))
    return cases


CSS_CASES = _css_cases()


def test_css_cases_exercise_the_difference():
    assert len(CSS_CASES) >= 12


@pytest.mark.parametrize("case", range(len(CSS_CASES)))
def test_css_keeps_the_top_leverage_scores_of_the_top_k_singular_vectors(case):
    seed, w, keep = CSS_CASES[case]
    rows, c = w.shape
    model, graph = linear_net(rows, c), linear_graph(rows, c)
    with torch.no_grad():
        model[0].weight.copy_(w.T)  # channel j's filter is column j of w
    mask = CHEX().prune(make_state(model, graph, step=4), graph.groups[0], keep)
    got = set(torch.nonzero(mask).flatten().tolist())
    want = _top(_ref_leverage(w, keep), keep)
    assert got == want, (seed, keep, sorted(got), sorted(want))
    assert got != _top(w.abs().sum(0), keep)  # not the L1 order
    # with all C singular vectors every column of a full-rank w has leverage 1: no information
    assert torch.allclose(_ref_leverage(w, c).float(), torch.ones(c), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_leverage_uses_only_directions_with_nonzero_singular_value(seed):
    """keep > rank: the scores are those of the top-rank singular vectors (they sum to the rank), not of
    `keep` vectors that include arbitrary directions of the null space."""
    g = torch.Generator().manual_seed(seed)
    rows, c, rank = 20, 10, 4
    w = torch.randn(rows, rank, generator=g) @ torch.randn(rank, c, generator=g)  # rank 4
    ref = _ref_leverage(w, rank).float()
    for keep in (rank, rank + 2, c - 1):
        lev = leverage_scores(w, keep)
        assert lev.sum().item() == pytest.approx(rank, abs=1e-4), keep
        assert torch.allclose(lev, ref, atol=1e-5), (keep, lev, ref)
    # and through prune: keep > rank still keeps the `rank` columns with the largest scores among its choice
    model, graph = linear_net(rows, c), linear_graph(rows, c)
    with torch.no_grad():
        model[0].weight.copy_(w.T)
    mask = CHEX().prune(make_state(model, graph, step=4), graph.groups[0], rank + 2)
    assert int(mask.sum()) == rank + 2
    s = ref.sort(descending=True).values
    if float(s[rank - 1] - s[rank]) > 1e-3:
        assert _top(ref, rank) <= set(torch.nonzero(mask).flatten().tolist())
    assert int(torch.linalg.matrix_rank(w[:, mask])) == rank  # the kept columns span w's range


# -- the regrow count of one exploration step ------------------------------------------------------------


def _step(model, ctrl, opt, g):
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    ctrl.after_backward()
    opt.step()


@pytest.mark.parametrize("event_step, delta_0", [(3, 0.3), (6, 0.3), (3, 0.4)])
def test_regrow_count_is_the_allocation_at_s_minus_delta_t_less_the_allocation_at_s(event_step, delta_0):
    spe, epochs, t_max_epochs, sparsity = 3, 4, 3, 0.5
    model = conv_net()
    graph = conv_graph(model)
    # coupled="mean": every group ranked, so the widths move with the budget and the case tells the rules
    # apart (with the default "fixed", this small net's streams hold their width)
    chex = CHEX(delta_T=1, T_max=t_max_epochs, delta_0=delta_0, coupled="mean")
    ctrl = PruningController(model, graph, chex, pk.Budget(sparsity=sparsity), spe, epochs, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctrl.start(opt)
    g = torch.Generator().manual_seed(0)
    for _ in range(event_step - 1):
        _step(model, ctrl, opt, g)
        ctrl.after_optimizer_step()
    _step(model, ctrl, opt, g)
    # what the event will see: pruned positions re-zeroed, MRU values of the live ones taken
    ctrl.enforce()
    ctrl.mru.snapshot(model, ctrl.keep)
    view = ctrl.state()  # the controller's view, at the step the event will run at
    view.step, view.generator = event_step, torch.Generator()
    if hasattr(view, "sparsity"):
        view.sparsity = sparsity
    t, t_max = event_step, t_max_epochs * spe
    delta_t = 0.5 * (1 + math.cos(math.pi * t / t_max)) * delta_0  # the paper's cosine, in steps
    at_s = chex.allocate(view, pk.Budget(sparsity=sparsity))
    wider = chex.allocate(view, pk.Budget(sparsity=sparsity - delta_t))
    half = chex.allocate(view, pk.Budget(sparsity=sparsity - delta_t / 2))
    expected = {gid: wider[gid] - at_s[gid] for gid in at_s}
    assert sum(expected.values()) > 0 and half != wider  # the case tells the two rules apart
    assert all(at_s[g.id] <= int(ctrl.keep[g.id].sum()) for g in graph.groups)  # all regrowth is delta_t's

    ctrl.after_optimizer_step()  # runs the event
    ev = ctrl.events[-1]
    assert ev["step"] == event_step and ev["kind"] == "prune+regrow"
    assert ev["regrow_fraction"] == pytest.approx(delta_t)
    assert ev["regrown"] == sum(expected.values())
    assert ev["kept"] == wider  # pruned to allocate(S), then regrown up to allocate(S - delta_t)
    assert {gid: int(m.sum()) for gid, m in ctrl.keep.items()} == wider
