"""``chex``: CHannel EXploration (Hou et al., "CHEX: CHannel EXploration for CNN Model Compression",
CVPR 2022, arXiv 2203.15794), applied to every prunable group of the channel graph.

Train from scratch at about the target size; every ``delta_T`` epochs up to ``T_max``:

1. allocate: rank the BN scales |gamma| of all prunable channels globally (a pruned channel at gamma = 0,
   as in the authors' code, which zeroes them); group l keeps k_l = (1 - kappa_l(S)) C_l channels,
   kappa_l(S) = |{i : |gamma_i^l| <= q(Gamma, S)}| / C_l; coupled groups (residual streams) are held at the
   budget's uniform width and the ranking allocates the rest (``coupled: fixed``, measured best on
   Fashion-MNIST; or ranked by the mean or max |gamma| of their BN layers);
2. prune each group by column subset selection among its active channels: keep the min(k_l, active)
   channels with the largest leverage scores ||V_k[j, :]||^2 of the top right singular vectors of W (rows:
   the stacked filters, one column per channel); groups whose W has fewer rows than columns fall back to
   the L1 norm, as the authors do;
3. restore MRU values and regrow (1 - kappa_l(S - delta_t)) C_l - k_l channels, plus any excess of k_l over
   the active channels, sampled without replacement with p_j = eps_j / sum(eps) where
   eps_j = ||w_j - P_A w_j|| is the distance of the MRU filter w_j to the span of the kept filters;
   delta_t = 0.5 (1 + cos(pi t / T_max)) delta_0.

Before training the model is pruned to S - delta_0 by the L1 norm of the filters (uniform widths: the BN
scales are all 1 at initialization). At T_max delta is 0, so the last event leaves the model at S.
Details, defaults and their sources: docs/strategies.md.
"""

from __future__ import annotations

import logging
import math

import torch
from prunekit.graphs import ChannelGroup

from prunekit.strategy import (
    Budget,
    Param,
    ParamError,
    PruningState,
    Schedule,
    Strategy,
    global_ranking_counts,
    is_coupled,
    top_k_mask,
    uniform_counts,
)

log = logging.getLogger("prunekit")

FP64_MAX = 256  # Gram matrices up to this size are decomposed in float64, larger ones in float32
RANK_RTOL = {torch.float64: 1e-10, torch.float32: 1e-6}  # on squared singular values (s: 1e-5, 1e-3)
ORTH_RTOL = {torch.float64: 1e-6, torch.float32: 1e-3}  # eps_j below this fraction of ||w_j|| counts as 0


# ---------------------------------------------------------------------------------------------- numerics


def _work_dtype(n: int) -> torch.dtype:
    return torch.float64 if n <= FP64_MAX else torch.float32


def _check_finite(w: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(w).all()):
        raise FloatingPointError(
            f"{what} has non-finite values (NaN/inf): training diverged; lower the learning rate or use fp32"
        )


def _eigh_desc(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, clamped at 0) and eigenvectors of a symmetric PSD matrix."""
    try:
        evals, evecs = torch.linalg.eigh(g)
    except RuntimeError:  # torch.linalg.LinAlgError: did not converge; SVD is slower but more robust
        _, evals, vh = torch.linalg.svd(g)
        return evals.clamp_min(0), vh.mT
    return evals.flip(0).clamp_min(0), evecs.flip(1)


def leverage_scores(w: torch.Tensor, k: int) -> torch.Tensor:
    """Leverage scores ||V_k[j, :]||^2 of the columns of ``w`` [rows, C] for its top-``k`` right singular
    vectors (float32, CPU). Only directions with non-zero singular value count: for a rank-r matrix the
    top-min(k, r) vectors are used, so duplicated or all-zero columns share (or get) no extra score."""
    c = w.shape[1]
    if c == 0 or k <= 0:
        return torch.zeros(c)
    dt = _work_dtype(c)
    x = w.detach().to(dt)
    evals, evecs = _eigh_desc(x.mT @ x)  # right singular vectors of w = eigenvectors of w^T w
    if float(evals[0]) <= 0:
        return torch.zeros(c)
    rank = int((evals > RANK_RTOL[dt] * evals[0]).sum())
    v = evecs[:, : min(k, rank)]
    return (v * v).sum(1).float().cpu()


def orthogonality(active: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """eps_j = ||w_j - W_A (W_A^T W_A)^+ W_A^T w_j||_2 for each column w_j of ``candidates`` [F, m]
    against the span of the columns of ``active`` [F, a] (float32, CPU).

    The projector is built from an orthonormal basis of the numerical range of W_A (rank-deficient and
    all-zero W_A are fine); eps_j smaller than a relative tolerance times ||w_j|| is set to exactly 0, so
    a candidate in the span of the active channels is never regrown."""
    f, m = candidates.shape
    if m == 0:
        return torch.zeros(0)
    dt = _work_dtype(max(active.shape[1], 1))
    wc = candidates.detach().to(dt)
    norms = wc.norm(dim=0)
    a = active.detach().to(dt)
    if a.shape[1] and f:
        evals, evecs = _eigh_desc(a.mT @ a)
        if float(evals[0]) > 0:
            rank = int((evals > RANK_RTOL[dt] * evals[0]).sum())
            u = a @ (evecs[:, :rank] / evals[:rank].sqrt())  # left singular vectors [F, r]
            q, _ = torch.linalg.qr(u)  # re-orthonormalize (u loses orthogonality for small singular values)
            wc = wc - q @ (q.mT @ wc)
    eps = wc.norm(dim=0)
    eps[eps <= ORTH_RTOL[dt] * norms] = 0.0
    return eps.float().cpu()


def sample_without_replacement(p: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` indices drawn without replacement with probabilities proportional to ``p`` (>= 0); when
    fewer than ``count`` entries are positive, all of those and the rest uniformly at random."""
    p = p.double().cpu()
    n = len(p)
    count = min(count, n)
    pos = torch.nonzero(p > 0).flatten()
    if len(pos) >= count:
        return torch.multinomial(p, count, replacement=False, generator=generator) if count else pos[:0]
    rest = torch.nonzero(p <= 0).flatten()
    fill = rest[torch.randperm(len(rest), generator=generator)[: count - len(pos)]]
    return torch.cat([pos, fill])


def cosine_delta(t: float, t_max: float, delta_0: float) -> float:
    """delta_t = 0.5 (1 + cos(pi t / T_max)) delta_0 for 0 <= t <= T_max, and 0 after."""
    if t_max <= 0 or t >= t_max:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * max(t, 0.0) / t_max)) * delta_0


# ---------------------------------------------------------------------------------------------- strategy


class CHEX(Strategy):
    """CHEX (CVPR 2022): prune-and-regrow from scratch (BN allocation, CSS pruning, orthogonal regrow)."""

    params = {
        "delta_0": Param(
            float, 0.3, min=0, max=1, max_exclusive=True,
            help="initial regrow fraction (the authors' ResNet-50 command: 0.3)",
        ),
        "delta_T": Param(
            float, 2.0, min=0, min_exclusive=True,
            help="interval between exploration steps, in `unit`s (the authors: 2 epochs)",
        ),
        "T_max": Param(
            float, None, min=0,
            help="last exploration step, in `unit`s (default: t_max_fraction of training)",
        ),
        "t_max_fraction": Param(
            float, 0.72, min=0, max=1,
            help="T_max as a fraction of training when T_max is unset (the authors: 180 of 250 epochs)",
        ),
        "unit": Param(str, "epoch", choices=("epoch", "step"), help="unit of delta_T and T_max"),
        "allocation": Param(
            str, "bn", choices=("bn", "uniform"),
            help="bn: global BN-scale percentile rule; uniform: same width fraction per group (ablation)",
        ),
        "selection": Param(
            str, "topk", choices=("topk", "sampling"),
            help="CSS: keep the top leverage scores, or sample by them",
        ),
        "regrow_by": Param(
            str, "orthogonality", choices=("orthogonality", "random", "none"),
            help="regrow by orthogonality sampling, at random (ablation), or not at all (ablation)",
        ),
        "probabilities": Param(
            str, "proportional", choices=("proportional", "softmax"),
            help="regrow probabilities: eps/sum(eps), or softmax(eps) as in the authors' code",
        ),
        "regrow_init": Param(
            str, "mru", choices=("mru", "zero"),
            help="regrown channels start from their MRU values, or with zero filters (BN and readers' columns MRU)",
        ),
        "pruned_gamma": Param(
            str, "zero", choices=("zero", "mru"),
            help="allocation ranks pruned channels at gamma = 0 (the authors' code) or at their MRU |gamma|",
        ),
        "coupled": Param(
            str, "fixed", choices=("fixed", "mean", "max"),
            help="coupled groups (residual streams) in the allocation: ranked by the mean or max |gamma| of "
            "their BN layers, or fixed at the budget's uniform width (not ranked)",
        ),
        "explore": Param(
            bool, True, help="false: prune once to S before training and never explore (ablation)"
        ),
    }

    def check(self) -> None:
        if self.T_max is not None and self.T_max < self.delta_T and self.T_max > 0:
            log.info("chex: T_max=%g < delta_T=%g: one exploration step at T_max", self.T_max, self.delta_T)
        if self.unit == "step" and self.T_max is not None and not float(self.T_max).is_integer():
            raise ParamError(f"strategy 'chex': T_max is in steps (unit: step) and must be whole, got {self.T_max}")

    # -- schedule ------------------------------------------------------------------------------------

    def t_max_steps(self, steps_per_epoch: int, epochs: int) -> int:
        """T_max in optimizer steps (clamped to the length of training)."""
        per_unit = steps_per_epoch if self.unit == "epoch" else 1
        total = steps_per_epoch * epochs
        t_max = self.T_max if self.T_max is not None else self.t_max_fraction * total / per_unit
        steps = int(round(t_max * per_unit))
        if steps > total:
            log.warning(
                "chex: T_max (%g %ss) is past the end of training (%d steps); exploring until the last step",
                t_max, self.unit, total,
            )
            steps = total
        return steps

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        t_max = self.t_max_steps(steps_per_epoch, epochs)
        if not self.explore or t_max <= 0:
            return Schedule.once(0)
        interval = self.delta_T * (steps_per_epoch if self.unit == "epoch" else 1)
        steps, k = [0], 1
        while k * interval < t_max:
            s = int(round(k * interval))
            if 0 < s < t_max:
                steps.append(s)
            k += 1
        steps.append(t_max)
        return Schedule(tuple(steps))

    def _exploring(self, state: PruningState) -> bool:
        return self.explore and self.t_max_steps(state.steps_per_epoch, state.epochs) > 0

    def prune_slack(self, state: PruningState) -> float:
        """delta_0 before training (the model starts at S - delta_0), 0 at the exploration steps."""
        return self.delta_0 if state.step == 0 and self._exploring(state) else 0.0

    def regrow_fraction(self, state: PruningState) -> float:
        """delta_t on the cosine schedule at exploration steps; 0 before training and at/after T_max."""
        if state.step == 0 or self.regrow_by == "none" or not self._exploring(state):
            return 0.0
        return cosine_delta(state.step, self.t_max_steps(state.steps_per_epoch, state.epochs), self.delta_0)

    # -- allocate ------------------------------------------------------------------------------------

    def channel_scores(self, state: PruningState) -> dict[str, torch.Tensor]:
        """Per-group channel importance for the global allocation: |gamma| combined over the group's BN
        layers (mean, or max with ``coupled: max``), pruned channels at 0 (``pruned_gamma: zero``: the masks
        zero their gamma) or at their MRU |gamma|; for a group without BN, the L1 norm of its filters
        rescaled so that its mean over active channels equals the mean |gamma| of the active BN channels of
        the model (cached per event)."""
        cached = state.extra.get("chex_scores")
        if cached is not None:
            return cached
        scores: dict[str, torch.Tensor] = {}
        missing = []
        source = "mru" if self.pruned_gamma == "mru" else "live"
        for g in state.graph.groups:
            s = state.bn_scales(g, source=source, reduce="max" if self.coupled == "max" else "mean")
            if s is None:
                missing.append(g)
            else:
                _check_finite(s, f"the BN scales of group {g.id!r}")
                scores[g.id] = s
        if missing:
            active = [scores[g.id][state.mask(g.id)] for g in state.graph.groups if g.id in scores]
            ref = float(torch.cat(active).mean()) if active and sum(len(a) for a in active) else 1.0
            for g in missing:
                l1 = state.channel_norms(g, p=1, source=source)
                act = l1[state.mask(g)]
                mean = float(act.mean()) if len(act) else 0.0
                scores[g.id] = l1 * (ref / mean) if mean > 0 else torch.full_like(l1, ref)
        state.extra["chex_scores"] = scores
        return scores

    def allocate(self, state: PruningState, budget: Budget) -> dict[str, int]:
        if state.step == 0 or self.allocation == "uniform":
            return uniform_counts(state.graph, budget)
        scores = self.channel_scores(state)
        if self.coupled != "fixed":
            return global_ranking_counts(state.graph, scores, budget)
        # coupled groups at the uniform width (1 - S) C_l; the global ranking re-allocates the others
        counts = uniform_counts(state.graph, budget)
        ranked = [g for g in state.graph.groups if not is_coupled(g)]
        counts.update(global_ranking_counts(state.graph, scores, budget, groups=ranked))
        return counts

    # -- prune ---------------------------------------------------------------------------------------

    def prune(self, state: PruningState, group: ChannelGroup, keep: int) -> torch.Tensor:
        """The ``keep`` channels to keep, chosen among the active ones (the controller never asks for more
        than are active: an allocation's excess is regrown, by orthogonality)."""
        active = state.mask(group)
        n_active = int(active.sum())
        if keep >= n_active:
            return active.clone()
        w = state.channel_matrix(group).mT  # [rows, C]: one column per channel (pruned ones are zero)
        _check_finite(w, f"the filters of group {group.id!r}")
        l1 = w.abs().sum(0).cpu()
        idx = torch.nonzero(active).flatten()  # candidates: the active channels
        mask = torch.zeros(group.size, dtype=torch.bool)
        if state.step == 0 or w.shape[0] < w.shape[1]:
            # initial pruning; fewer rows than columns: the authors' fallback to the L1 norm
            mask[idx[top_k_mask(l1[idx], keep)]] = True
            return mask
        lev = leverage_scores(w, keep)  # zero columns (pruned channels) get no score and change nothing
        if self.selection == "sampling":
            chosen = idx[sample_without_replacement(lev[idx], keep, state.generator)]
            if len(chosen) < keep:  # cannot happen (fills at random), kept for clarity
                raise RuntimeError("CSS sampling returned too few channels")
            mask[chosen] = True
            return mask
        # top-k leverage; ties (e.g. the copies of a duplicated channel) broken by L1 norm, then index
        order = idx[torch.argsort(-l1[idx], stable=True)]
        order = order[torch.argsort(-torch.round(lev[order] * 1e6), stable=True)]
        mask[order[:keep]] = True
        return mask

    # -- regrow --------------------------------------------------------------------------------------

    def regrow(self, state: PruningState, group: ChannelGroup, count: int) -> torch.Tensor:
        mask = state.mask(group)
        pruned = torch.nonzero(~mask).flatten()
        if count <= 0 or len(pruned) == 0 or self.regrow_by == "none":
            return pruned[:0]
        if self.regrow_by == "random":
            return pruned[torch.randperm(len(pruned), generator=state.generator)[:count]]
        w = state.channel_matrix(group, source="mru").mT  # [rows, C]: kept live, pruned MRU
        _check_finite(w, f"the MRU filters of group {group.id!r}")
        eps = orthogonality(w[:, mask], w[:, pruned])
        if self.probabilities == "softmax":
            p = torch.softmax(eps.double(), 0)
        else:
            total = float(eps.double().sum())
            p = eps.double() / total if total > 0 else torch.zeros(len(eps), dtype=torch.float64)
        return pruned[sample_without_replacement(p, count, state.generator)]
