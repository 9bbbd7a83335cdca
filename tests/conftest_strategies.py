"""Helpers shared by the strategy, registry and controller tests (imported, not a pytest plugin).

``linear_net``/``linear_graph`` give a model and a hand-built ChannelGraph whose single prunable group
has a producer matrix we control exactly: channel j's filter is column j of W = ``net[0].weight.T``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from prunekit.graphs import ChannelGraph, ChannelGroup, Member
from torch import nn

import prunekit as pk
from prunekit.strategy import MRUStore, PruningState


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread: these models are tiny, and on a shared 2-core machine several
    threads per process make each step tens of times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _member(module: str, param: str, dim: int, n: int, role: str) -> Member:
    return Member(module, param, dim, torch.arange(n), torch.arange(n), role)


def linear_net(features: int, channels: int, outputs: int = 2) -> nn.Sequential:
    """Linear(features -> channels) -> BN -> ReLU -> Linear(channels -> outputs)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(features, channels), nn.BatchNorm1d(channels), nn.ReLU(), nn.Linear(channels, outputs)
    )


def linear_group(gid: str, prefix: str, channels: int, bn: bool = True) -> ChannelGroup:
    p = f"{prefix}." if prefix else ""
    members = [_member(f"{p}0", "weight", 0, channels, "out"), _member(f"{p}0", "bias", 0, channels, "out")]
    if bn:
        members += [_member(f"{p}1", n, 0, channels, "norm") for n in ("weight", "bias", "running_mean", "running_var")]
    members.append(_member(f"{p}3", "weight", 1, channels, "in"))
    return ChannelGroup(gid, channels, members, producers=[f"{p}0"])


def linear_graph(features: int, channels: int, outputs: int = 2) -> ChannelGraph:
    """The hand-built graph of ``linear_net``: one prunable group "0" of ``channels`` channels."""
    return ChannelGraph(
        [linear_group("0", "", channels)],
        [],
        "linear_net",
        macs_terms=[("0", 1, channels, features), ("3", 1, outputs, channels)],
    )


class MultiNet(nn.Module):
    """Several independent linear_nets side by side (one prunable group each) for allocation tests."""

    def __init__(self, sizes: list[int], features: int = 8, bn: list[bool] | None = None):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Linear(features, c),
                nn.BatchNorm1d(c) if (bn is None or bn[i]) else nn.Identity(),
                nn.ReLU(),
                nn.Linear(c, 1),
            )
            for i, c in enumerate(sizes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x) for b in self.branches)


def multi_graph(sizes: list[int], features: int = 8, bn: list[bool] | None = None) -> ChannelGraph:
    groups = [
        linear_group(f"branches.{i}.0", f"branches.{i}", c, bn=bn is None or bn[i]) for i, c in enumerate(sizes)
    ]
    terms = []
    for i, c in enumerate(sizes):
        terms += [(f"branches.{i}.0", 1, c, features), (f"branches.{i}.3", 1, 1, c)]
    return ChannelGraph(groups, [], "multi_net", macs_terms=terms)


def make_state(
    model: nn.Module,
    graph: ChannelGraph,
    keep: dict[str, torch.Tensor] | None = None,
    step: int = 1,
    steps_per_epoch: int = 1,
    epochs: int = 10,
    seed: int = 0,
) -> PruningState:
    return PruningState(
        model=model,
        graph=graph,
        keep=keep if keep is not None else graph.full_keep(),
        generator=torch.Generator().manual_seed(seed),
        mru=MRUStore(model, graph),
        step=step,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )


def conv_net(width: int = 8, classes: int = 3) -> nn.Sequential:
    """Conv-BN-ReLU x2 with a residual-free head: two prunable groups (small and fast)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width * 2, 3, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(),
        nn.Conv2d(width * 2, width, 1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes),
    )  # fmt: skip


def conv_graph(model: nn.Module) -> ChannelGraph:
    return pk.build_graph(model, torch.zeros(1, 3, 8, 8))


def train_steps(model: nn.Module, ctrl, opt: torch.optim.Optimizer, n: int, seed: int = 0, shape=(4, 3, 8, 8)):
    """``n`` training steps on random data, with the controller hooks in place."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(*shape, generator=g)
        y = torch.randint(0, 3, (shape[0],), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        ctrl.after_backward()
        opt.step()
        ctrl.after_optimizer_step()


@contextlib.contextmanager
def registry_sandbox() -> Iterator[None]:
    """Restore the strategy registry's contents after the block (tests register throwaway names)."""
    from prunekit import registry

    registry.discover()
    saved = (dict(registry._registry), dict(registry._failed), set(registry._from_entry_points))
    try:
        yield
    finally:
        registry._registry.clear()
        registry._registry.update(saved[0])
        registry._failed.clear()
        registry._failed.update(saved[1])
        registry._from_entry_points.clear()
        registry._from_entry_points.update(saved[2])
