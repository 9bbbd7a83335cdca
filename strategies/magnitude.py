"""``magnitude``: prune by the norm of each channel's weights, once or gradually, then fine-tune (no regrow).

Score of channel i of a group: the L1 (or L2) norm of its values in the group's producer members, i.e.
the filters that create it (role "out": conv/linear ``weight`` rows; role "dw": depthwise filters). With
``members: all`` the norm also covers every other parameter of the channel (BN weight and bias, the
consumer input columns, biases). Allocation is uniform (every group keeps the same fraction) or global:
the scores are divided by the mean score of their group (so layers of different scale compare) and the
lowest S * N of all N channels are pruned.

When: once, after a fraction ``at`` of training (0: at initialization; 0.5: train dense for half the steps,
prune, fine-tune the rest), or gradually with ``end`` set: ``events`` pruning steps evenly spaced from ``at``
to ``end``, the sparsity following Zhu & Gupta's cubic schedule (arXiv 1710.01878, eq. 1, initial sparsity 0)

    s_k = S (1 - (1 - k / n)^3),  k = 1 .. n,  at step  t_k = t_at + k (t_end - t_at) / n,

so the network reaches S at ``end`` and trains on at S until the last epoch. Every run has the same epochs.
"""

from __future__ import annotations

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
    top_k_mask,
)

ALL_ROLES = ("out", "dw", "norm", "in", "param")


def cubic_sparsity(k: int, n: int, target: float) -> float:
    """Zhu & Gupta's s_k = S (1 - (1 - k/n)^3) for pruning step k of n (initial sparsity 0)."""
    return target * (1.0 - (1.0 - min(max(k, 0), n) / n) ** 3)


class Magnitude(Strategy):
    """Prune by the L1/L2 norm of each channel's filters, once or on a cubic schedule, then fine-tune."""

    params = {
        "norm": Param(str, "l1", choices=("l1", "l2"), help="channel score: L1 or L2 norm"),
        "allocation": Param(
            str, "uniform", choices=("uniform", "global"),
            help="uniform: same fraction per group; global: one ranking of group-normalized scores",
        ),
        "members": Param(
            str, "out", choices=("out", "all"),
            help="out: the producer filters; all: every parameter of the channel",
        ),
        "at": Param(
            float, 0.0, min=0, max=1,
            help="fraction of training after which it prunes (0: at initialization); gradual: where it starts",
        ),
        "end": Param(
            float, None, min=0, max=1,
            help="gradual pruning: fraction of training at which S is reached (unset: prune once at `at`)",
        ),
        "events": Param(int, 10, min=1, help="gradual pruning: number of pruning steps from `at` to `end`"),
        "prune_step": Param(
            int, 0, min=0, help="optimizer step at which to prune once (0: use `at`); exclusive with `at`/`end`"
        ),
    }

    def check(self) -> None:
        if self.prune_step and (self.at or self.end is not None):
            raise ParamError("strategy 'magnitude': set either prune_step (a step) or at/end (fractions), not both")
        if self.end is not None and self.end <= self.at:
            raise ParamError(
                f"strategy 'magnitude': end ({self.end:g}) must be after at ({self.at:g}) for gradual pruning; "
                "unset end to prune once"
            )

    # -- schedule ------------------------------------------------------------------------------------

    def _steps(self, total: int) -> list[int]:
        """The optimizer steps of the pruning events (one, or ``events`` for gradual pruning)."""
        if self.prune_step:
            return [self.prune_step]
        start = int(round(self.at * total))
        if self.end is None:
            return [start]
        stop = int(round(self.end * total))
        steps = sorted({int(round(start + k * (stop - start) / self.events)) for k in range(1, self.events + 1)})
        return [s for s in steps if s > start or s == stop]

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        return Schedule(tuple(self._steps(steps_per_epoch * epochs)))

    def prune_slack(self, state: PruningState) -> float:
        """Gradual pruning: S - s_k = S (1 - k/n)^3 at the k-th of n events (0 at the last), else 0."""
        steps = self._steps(state.total_steps)
        if len(steps) < 2 or state.step not in steps or not state.sparsity:
            return 0.0
        k = steps.index(state.step) + 1
        return state.sparsity - cubic_sparsity(k, len(steps), state.sparsity)

    # -- allocate ------------------------------------------------------------------------------------

    def allocate(self, state: PruningState, budget: Budget) -> dict[str, int]:
        if self.allocation == "uniform":
            return super().allocate(state, budget)
        cache = state.extra.setdefault("magnitude_scores", {})
        if not cache:
            for g in state.graph.groups:
                s = self.scores(state, g)
                active = s[state.mask(g)]
                mean = float(active.mean()) if len(active) else 0.0
                s = s / mean if mean > 0 else torch.ones_like(s)
                cache[g.id] = torch.where(state.mask(g), s, torch.zeros_like(s))  # pruned channels rank lowest
        return global_ranking_counts(state.graph, cache, budget)

    # -- prune ---------------------------------------------------------------------------------------

    def scores(self, state: PruningState, group: ChannelGroup) -> torch.Tensor:
        """Norm of each channel of ``group`` (float32, CPU)."""
        if self.members == "out":
            return state.channel_norms(group, p=1 if self.norm == "l1" else 2)
        return state.channel_norms(
            group, p=1 if self.norm == "l1" else 2, roles=ALL_ROLES, params=("weight", "bias")
        )

    def prune(self, state: PruningState, group: ChannelGroup, keep: int) -> torch.Tensor:
        """The ``keep`` active channels with the largest norms."""
        active = state.mask(group)
        idx = torch.nonzero(active).flatten()
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[idx[top_k_mask(self.scores(state, group)[idx], keep)]] = True
        return mask
