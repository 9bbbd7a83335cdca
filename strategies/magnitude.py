"""``magnitude``: prune once by the norm of each channel's weights, then fine-tune (no regrow).

Score of channel i of a group: the L1 (or L2) norm of its values in the group's producer members, i.e.
the filters that create it (role "out": conv/linear ``weight`` rows; role "dw": depthwise filters). With
``members: all`` the norm also covers every other parameter of the channel (BN weight and bias, the
consumer input columns, biases). Allocation is uniform (every group keeps the same fraction) or global:
the scores are divided by the mean score of their group (so layers of different scale compare) and the
lowest S * N of all N channels are pruned.
"""

from __future__ import annotations

import torch
from prunekit.graphs import ChannelGroup

from prunekit.strategy import Budget, Param, PruningState, Schedule, Strategy, global_ranking_counts, top_k_mask

ALL_ROLES = ("out", "dw", "norm", "in", "param")


class Magnitude(Strategy):
    """Prune once by the L1/L2 norm of each channel's filters (uniform or global allocation), then fine-tune."""

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
        "prune_step": Param(int, 0, min=0, help="optimizer step at which to prune (0: before training)"),
    }

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        return Schedule.once(self.prune_step)

    def scores(self, state: PruningState, group: ChannelGroup) -> torch.Tensor:
        """Norm of each channel of ``group`` (float32, CPU)."""
        if self.members == "out":
            return state.channel_norms(group, p=1 if self.norm == "l1" else 2)
        return state.channel_norms(
            group, p=1 if self.norm == "l1" else 2, roles=ALL_ROLES, params=("weight", "bias")
        )

    def allocate(self, state: PruningState, budget: Budget) -> dict[str, int]:
        if self.allocation == "uniform":
            return super().allocate(state, budget)
        cache = state.extra.setdefault("magnitude_scores", {})
        if not cache:
            for g in state.graph.groups:
                s = self.scores(state, g)
                active = s[state.mask(g)]
                mean = float(active.mean()) if len(active) else 0.0
                cache[g.id] = s / mean if mean > 0 else torch.ones_like(s)
        return global_ranking_counts(state.graph, cache, budget)

    def prune(self, state: PruningState, group: ChannelGroup, keep: int) -> torch.Tensor:
        return top_k_mask(self.scores(state, group), keep)
