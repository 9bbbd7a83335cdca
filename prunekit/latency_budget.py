"""Latency budgets: the channel sparsity whose *slimmed* model keeps a fraction of the dense model's latency,
measured on the device the run trains on.

    timer = LatencyTimer(env, torch.zeros(32, 3, 32, 32))     # times models on env.device (cpu or cuda)
    ms, ratios = timed(timer([dense, small]))                  # medians; paired ratios to the dense model
    ctrl = PruningController(model, graph, strategy, Budget(latency=0.6), spe, epochs, latency_timer=timer)

How the controller resolves ``Budget(latency=L)`` at an event (``PruningController._resolve_latency``):

1. a *probe* at MACs fraction m: the MACs bisection of ``Budget(macs=m)`` with the strategy's own
   allocation gives per-group widths; the model slimmed to those widths is timed beside the dense model
   (one timer call, both interleaved) and the probe's latency ratio is slimmed / dense;
2. ``solve_latency`` starts from m = L (or the MACs fraction found at the previous measured event) and
   moves m by secant steps on the measured ratios (the dense model is the point (1, 1)), bracketing the
   target once a probe lands below it, until a probe is within ``LATENCY_TOLERANCE`` of L or
   ``MAX_PROBES`` probes were timed; the probe closest to L is used. If the smallest model the
   allocation can reach is still slower than L, it is a ``LatencyBudgetError`` naming what is reachable;
3. with ``round_to="auto"`` the rounding is chosen once, at the first measured event: the MACs fraction
   that step 2 finds with round_to 1 is solved with each of ``ROUND_TO_CANDIDATES`` (those smaller than the
   widest group), all candidates are timed in one interleaved call and ranked by speed (``rank_round_to``:
   ratios corrected to the same MACs fraction, a coarser rounding must win by over 1%, one that cannot land
   near that fraction is out); step 2 then runs with the fastest, or the next when it cannot reach the
   target, and that rounding is kept for the rest of the run.

Timing every event would cost a CHEX run dozens of timer calls, so the controller measures at its first
event and at its last (the widths the run ends with); events in between use the MACs fraction the last
measurement found. A timer is any callable ``timer(models)`` returning ``prunekit.latency.LatencyStats``
(``LatencyTimer`` does: a ratio is the median of the per-round paired ratios, so a slow stretch of the
machine cancels out) or a plain list of milliseconds: tests pass a fake one, a known function of the
slimmed model's widths, so the solver is checked without timing noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger("prunekit")

LATENCY_TOLERANCE = 0.04  # a probe within 4% (relative) of the target latency ends the search
MAX_PROBES = 7  # timer calls per measured event (round_to=auto adds one call per round_to solve + one)
ROUND_TO_CANDIDATES = (1, 8, 16, 32)
ROUND_TO_MACS_SLACK = 0.1  # a rounding whose widths land further than this (relative) from the budget is out
TIMEABLE_DEVICES = ("cpu", "cuda")

Timer = Callable[[Sequence[nn.Module]], Any]  # -> LatencyStats or a list of milliseconds, one per model


class LatencyBudgetError(ValueError):
    """A latency budget cannot be met or measured; the message says what is reachable and what to change."""


@dataclass
class Probe:
    """One timed candidate: the MACs fraction it keeps, its latency as a fraction of the dense model's, and
    how the controller reproduces its widths (sparsity and held groups of the MACs bisection)."""

    macs: float
    ratio: float
    ms: float
    dense_ms: float
    round_to: int
    sparsity: float = 0.0
    held: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("held")
        return d


def timed(result: Any) -> tuple[list[float], list[float]]:
    """(milliseconds of each model, each model's latency as a fraction of model 0's) from a timer's answer:
    a ``LatencyStats`` (fractions: medians of the paired per-round ratios) or a list of milliseconds."""
    if hasattr(result, "ms") and hasattr(result, "ratio"):
        ms = [float(v) for v in result.ms]
        return ms, [1.0] + [float(result.ratio(i, 0)) for i in range(1, len(ms))]
    ms = [float(v) for v in result]
    if not ms or not all(v > 0 for v in ms):
        raise LatencyBudgetError(f"the latency timer returned {ms!r}; it must give a positive time per model")
    return ms, [v / ms[0] for v in ms]


def solve_latency(
    probe: Callable[[float], Probe],
    target: float,
    floor: float,
    start: float | None = None,
    tolerance: float = LATENCY_TOLERANCE,
    max_probes: int = MAX_PROBES,
) -> tuple[Probe, list[Probe]]:
    """The probe whose latency ratio is closest to ``target``, and every probe timed (in order).

    ``probe(m)`` times the candidate at MACs fraction ``m`` (it may land on a nearby fraction: group widths
    are integers); ``floor`` is the smallest MACs fraction the allocation reaches. Raises
    ``LatencyBudgetError`` when the candidate at the floor is still more than ``tolerance`` above target."""
    if not 0.0 < target < 1.0:
        raise LatencyBudgetError(f"the latency budget is a fraction of the dense latency in (0, 1), got {target!r}")
    points: list[tuple[float, float]] = [(1.0, 1.0)]  # (MACs fraction, latency ratio): the dense model
    probes: list[Probe] = []
    m = min(max(target if start is None else start, floor), 1.0)
    for _ in range(max_probes):
        p = probe(m)
        repeat = any(abs(q.macs - p.macs) < 1e-12 for q in probes)
        if not repeat:
            probes.append(p)
            points.append((p.macs, p.ratio))
        if abs(p.ratio - target) <= tolerance * target:
            break
        at_floor = p.macs <= floor + 1e-9 or m <= floor + 1e-12
        if at_floor and p.ratio > target:
            break  # nothing smaller to try
        nxt = _next_macs(points, target, floor)
        if repeat and abs(nxt - m) < 1e-6:
            break  # the widths cannot move any closer (integer channel counts)
        m = nxt
    best = min(probes, key=lambda q: (abs(q.ratio - target), -q.macs))
    smallest = min(probes, key=lambda q: q.macs)
    if best.ratio > target * (1 + tolerance) and smallest.macs <= floor + 1e-9 and smallest.ratio > target:
        raise LatencyBudgetError(
            f"the latency budget keeps {target:g} of the dense latency ({target * smallest.dense_ms:.3g} ms), but "
            f"the smallest model this allocation reaches (round_to={smallest.round_to}, {smallest.macs:.3g} of the "
            f"MACs) measures {smallest.ratio:.3g} of it ({smallest.ms:.3g} ms); ask for latency >= "
            f"{smallest.ratio * (1 + tolerance):.2f}, or raise prune.latency_batch (--latency-batch) so compute, "
            "not per-layer overhead, dominates the time"
        )
    return best, probes


def _next_macs(points: list[tuple[float, float]], target: float, floor: float) -> float:
    """The next MACs fraction to probe: the secant through the measured points that bracket the target
    (the largest fraction at or below it and the smallest fraction above that one), or, while every probe
    is above the target, the extrapolation of the two smallest probes (or the probe and the dense point)."""
    below = [p for p in points if p[1] <= target]
    if below:
        lo = max(below)
        hi = min((p for p in points if p[1] > target and p[0] > lo[0]), default=(1.0, 1.0))
    else:
        pts = sorted(points)
        lo, hi = pts[0], pts[1] if len(pts) > 1 else (1.0, 1.0)
        if hi[1] <= lo[1]:  # noise or a non-monotone step: fall back to the line through the dense point
            hi = (1.0, 1.0)
    if hi[0] - lo[0] <= 1e-12 or hi[1] == lo[1]:
        return max(floor, lo[0] - 0.5 * (lo[0] - floor))
    slope = (hi[1] - lo[1]) / (hi[0] - lo[0])
    if slope <= 0:
        slope = (1.0 - lo[1]) / max(1.0 - lo[0], 1e-9) or 1.0
    m = lo[0] + (target - lo[1]) / slope
    return min(max(m, floor), 1.0)


def rank_round_to(candidates: dict[int, Probe], slope: float, at: float) -> list[int]:
    """The roundings fastest first: each candidate's ratio corrected to the MACs fraction ``at`` by the
    measured ``slope`` (latency ratio per MACs fraction); a coarser rounding must be more than 1% faster than
    a finer one to rank before it. Candidates that land more than ``ROUND_TO_MACS_SLACK`` (relative) away
    from ``at`` cannot express the budget (groups too narrow for that multiple) and are left out; round_to 1
    never is."""
    adjusted = {
        r: p.ratio + slope * (at - p.macs)
        for r, p in candidates.items()
        if r == 1 or abs(p.macs - at) <= ROUND_TO_MACS_SLACK * at
    }
    order: list[int] = []
    for r in sorted(adjusted):  # insert finest first; a coarser one passes only what it beats by over 1%
        i = len(order)
        while i > 0 and adjusted[r] < adjusted[order[i - 1]] * 0.99:
            i -= 1
        order.insert(i, r)
    return order


def slope_of(probes: Sequence[Probe]) -> float:
    """Latency ratio per MACs fraction from the probes near the answer (the dense point when only one)."""
    pts = sorted({(p.macs, p.ratio) for p in probes} | {(1.0, 1.0)})
    if len(pts) < 2:
        return 1.0
    (m0, r0), (m1, r1) = pts[0], pts[-1]
    return (r1 - r0) / (m1 - m0) if m1 > m0 else 1.0


class LatencyTimer:
    """``timer(models) -> LatencyStats``: each model's forward time on ``env.device`` with the batch
    ``example`` (eval mode, no grad, the env's channels_last and autocast), the models interleaved after a
    warm-up, at least ``runs`` rounds and ``min_seconds`` (``prunekit.latency.time_models``), read on the
    harness's clock (``prunekit.latency.cpu_clock``: the thread's CPU time on one CPU thread, so waiting for a
    core on a busy machine does not count; else the wall clock). Models are moved to the device first.

    Under torch.distributed only rank 0 times; the others receive its figures, so every rank makes the
    same decisions."""

    def __init__(self, env: Any, example: torch.Tensor, runs: int = 30, warmup: int = 3, min_seconds: float = 2.0):
        device = torch.device(env.device)
        if device.type not in TIMEABLE_DEVICES:
            raise LatencyBudgetError(
                f"a latency budget times models on the run's device, and prunekit cannot time device "
                f"{str(device)!r} (it times {' and '.join(TIMEABLE_DEVICES)}); train on cpu or cuda, or use a MACs "
                "budget (--macs)"
            )
        if runs < 1 or warmup < 0:
            raise ValueError(f"LatencyTimer needs runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
        self.env, self.example, self.runs, self.warmup = env, example, int(runs), int(warmup)
        self.min_seconds = float(min_seconds)
        self.calls = 0

    def __call__(self, models: Sequence[nn.Module]) -> Any:
        from .latency import cpu_clock, time_models

        self.calls += 1
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        out: list[Any] = [None]
        if not distributed or dist.get_rank() == 0:
            ready = []
            for m in models:
                m = m.to(self.env.device)
                if getattr(self.env, "channels_last", False):
                    m = m.to(memory_format=torch.channels_last)
                for p in m.parameters():
                    p.requires_grad_(False)
                ready.append(m)
            clock, clock_name = cpu_clock(self.env)
            out = [
                time_models(
                    ready, self.example, self.env, runs=self.runs, warmup=self.warmup, min_seconds=self.min_seconds,
                    clock=clock, clock_name=clock_name,
                )
            ]
        if distributed:
            dist.broadcast_object_list(out, src=0)
        return out[0]
