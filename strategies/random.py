"""``random``: uniform allocation and random channels, drawn from the run's seeded generator.

The control baseline: any strategy that claims to choose channels well should beat it at the same budget.
"""

from __future__ import annotations

import torch
from prunekit.graphs import ChannelGroup

from prunekit.strategy import Param, PruningState, Schedule, Strategy


class RandomStrategy(Strategy):
    """Prune once, keeping random channels (the same fraction in every group); a baseline."""

    params = {
        "prune_step": Param(int, 0, min=0, help="optimizer step at which to prune (0: before training)"),
    }

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        return Schedule.once(self.prune_step)

    def prune(self, state: PruningState, group: ChannelGroup, keep: int) -> torch.Tensor:
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[torch.randperm(group.size, generator=state.generator)[:keep]] = True
        return mask
