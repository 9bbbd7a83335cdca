"""Latency: the wall time of a forward pass, for several models timed interleaved so that a load change on
the machine hits them alike.

    stats = time_models([small, dense], torch.zeros(32, 3, 32, 32), env, runs=20, min_seconds=1.0)
    stats.ms                  # [small ms, dense ms]: the median of each model's samples
    stats.ratio(1, 0)         # dense / small: the median over rounds of the paired ratio (the speedup)
    stats.describe()          # how it was measured, for the results table's footer
    small_ms, dense_ms = measure_latency([small, dense], x, env)   # just the medians

How: eval mode, no grad, the run's device, autocast and channels_last. ``warmup`` rounds first (not
timed: allocator, oneDNN/cuDNN kernel selection, caches). Then rounds until at least ``runs`` rounds and
``min_seconds`` of timing have passed (at most ``max_rounds``); a round times every model once, in an
order that alternates (reversed every other round, rotated for more than two models) so no model always
runs first. A sample is the mean of ``calls`` forward passes, with ``calls`` chosen after the warm-up so
that a sample of the fastest model lasts at least ``sample_ms`` (timer and Python overhead stay small
against tiny models). Garbage collection is off while timing. A model's latency is the median of its
samples; a ratio of two models is the median of their per-round ratios, so a slow stretch of the machine,
which hits both models of a round alike, cancels out. The harness reads the thread's CPU time instead of
the wall clock when it runs on one CPU thread (``cpu_clock``), so that waiting for a core on a busy machine
does not count.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .env import Env, autocast

MIN_SECONDS = 1.0  # the harness's final dense-vs-slimmed measurement times for at least this long


@dataclass
class LatencyStats:
    """Samples of several models timed interleaved (``samples[i][r]``: model i in round r, ms per call)."""

    samples: list[list[float]]
    warmup: int
    calls: int  # forward passes per sample
    clock: str = "wall clock"  # or "thread CPU time" (see ``cpu_clock``)

    @property
    def rounds(self) -> int:
        return len(self.samples[0]) if self.samples else 0

    @property
    def ms(self) -> list[float]:
        """The median of each model's samples, in milliseconds per forward pass."""
        return [statistics.median(s) for s in self.samples]

    def ratio(self, num: int, den: int) -> float:
        """The median over the rounds of ``samples[num][r] / samples[den][r]`` (e.g. dense / slimmed: speedup)."""
        return statistics.median(a / b for a, b in zip(self.samples[num], self.samples[den], strict=True) if b > 0)

    def describe(self) -> str:
        calls = f", {self.calls} calls per sample" if self.calls > 1 else ""
        clock = f" ({self.clock})" if self.clock != "wall clock" else ""
        return f"median of {self.rounds} interleaved rounds after {self.warmup} warm-up{calls}{clock}"


def round_order(n: int, i: int) -> list[int]:
    """The order the ``n`` models run in round ``i``: reversed in odd rounds, and with more than two models
    also rotated by ``i // 2`` (so each one leads some rounds)."""
    base = list(range(n))
    k = (i // 2) % n if n > 2 else 0
    order = base[k:] + base[:k]
    return order[::-1] if i % 2 else order


@torch.no_grad()
def time_models(
    models: Sequence[nn.Module],
    example: torch.Tensor,
    env: Env,
    runs: int = 20,
    warmup: int = 5,
    min_seconds: float = 0.0,
    max_rounds: int = 2000,
    sample_ms: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
    clock_name: str = "wall clock",
) -> LatencyStats:
    """Time ``model(example)`` for every model, interleaved (see the module docstring). ``clock``: what is
    read before and after each sample (``cpu_clock`` gives the one the harness uses), named ``clock_name``."""
    if runs < 1 or warmup < 0 or max_rounds < runs:
        raise ValueError(
            f"time_models needs runs >= 1, warmup >= 0, max_rounds >= runs; got {runs}, {warmup}, {max_rounds}"
        )
    x = example.to(env.device)
    if env.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    n = len(models)

    def one_round(i: int, calls: int) -> list[float]:
        ms = [0.0] * n
        for k in round_order(n, i):
            sync()
            t0 = clock()
            for _ in range(calls):
                models[k](x)
            sync()
            ms[k] = (clock() - t0) * 1000.0 / calls
        return ms

    gc_was = gc.isenabled()
    gc.disable()
    try:
        with autocast(env):
            last = [0.0] * n
            for i in range(warmup):
                last = one_round(i, 1)
            if warmup == 0:
                last = one_round(0, 1)  # one untimed call to size the samples
            fastest = min(last) if n else 0.0
            calls = max(1, min(100, math.ceil(sample_ms / fastest - 1e-6))) if fastest > 0 else 1
            samples: list[list[float]] = [[] for _ in models]
            start, r = clock(), 0
            while r < runs or (clock() - start < min_seconds and r < max_rounds):
                for k, ms in enumerate(one_round(warmup + r, calls)):
                    samples[k].append(ms)
                r += 1
    finally:
        if gc_was:
            gc.enable()
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    return LatencyStats(samples, warmup, calls, clock_name)


def cpu_clock(env: Env) -> tuple[Callable[[], float], str]:
    """The clock to time forward passes with on ``env``: this thread's CPU time when the run uses one CPU
    thread (torch then computes in the calling thread, and the time the process waits for a core on a busy
    machine is left out; docs/results/latency_stability.md: on a loaded 2-core machine the batch-1 speedup of
    one pair spread over 1.30x-2.93x by the wall clock and 1.68x-1.75x by CPU time), else the wall clock
    (several threads, or a GPU)."""
    if env.device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time, "thread CPU time"
    return time.perf_counter, "wall clock"


def measure_latency(
    models: Sequence[nn.Module],
    example: torch.Tensor,
    env: Env,
    runs: int = 20,
    warmup: int = 5,
    min_seconds: float = 0.0,
) -> list[float]:
    """The median wall time of ``model(example)`` in milliseconds for each model, timed interleaved after a
    warm-up (``time_models``; at least ``runs`` rounds and ``min_seconds``)."""
    return time_models(models, example, env, runs=runs, warmup=warmup, min_seconds=min_seconds).ms
