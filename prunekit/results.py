"""What one run produced: ``RunResult``, the record ``result.json`` holds and ``compare`` tables list.

res = RunResult.from_dir("runs/chex-digits-resnet20-...")   # read a finished run back
res.top1, res.macs_reduction, res.speedup
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

DENSE_NAMES = ("none", "dense")  # strategy names that mean "train the dense model, prune nothing"
ERROR_FILE = "error.txt"  # in a run directory: the traceback of a run that failed after its first checkpoint


@dataclass
class RunResult:
    """What one run produced; ``result.json`` holds the same fields."""

    strategy: str
    # "ok", "failed", or "diverged" (a non-finite loss stopped it; see error); in `prunekit report` also
    # "missing" (a planned run with no directory) and "unfinished" (a checkpoint but no result)
    status: str = "ok"
    error: str | None = None
    run_dir: str | None = None
    dataset: str | None = None
    model: str | None = None
    seed: int | None = None
    epochs: int | None = None
    device: str | None = None
    world_size: int = 1
    top1: float | None = None  # percent, final epoch
    top5: float | None = None
    loss: float | None = None
    best_top1: float | None = None
    dense_top1: float | None = None  # filled in by compare when a dense baseline ran
    params: int | None = None  # slimmed model
    macs: int | None = None  # slimmed model, per sample
    dense_params: int | None = None
    dense_macs: int | None = None
    macs_reduction: float | None = None  # 1 - macs / dense_macs
    latency_ms: float | None = None  # slimmed model, median, batch ``latency_batch``
    dense_latency_ms: float | None = None
    speedup: float | None = None  # dense / slimmed: the median of the paired per-round ratios
    latency_batch: int | None = None
    latency_method: str | None = None  # how latency and speedup were measured (prunekit.latency)
    # latency budgets (prune.latency): the fraction of the dense latency asked for, that target in ms, and what
    # the slimmed model measures, all at batch ``latency_budget_batch`` on the run's device
    latency_target: float | None = None
    latency_target_ms: float | None = None
    latency_achieved: float | None = None  # slimmed / dense: the median of the paired per-round ratios
    latency_achieved_ms: float | None = None  # latency_achieved x the dense model's median ms
    latency_budget_batch: int | None = None
    round_to: int | None = None  # the rounding of kept channels the run used (round_to=auto: the one chosen)
    train_seconds: float | None = None
    event_seconds: float | None = None
    num_events: int = 0
    slim_max_abs_diff: float | None = None  # |slim(x) - masked(x)| on a test batch
    kept: dict[str, int] = field(default_factory=dict)  # final channels per group
    group_sizes: dict[str, int] = field(default_factory=dict)
    ddp: dict[str, Any] = field(default_factory=dict)
    # how the inputs were made (prunekit.data.input_spec): shape, pixel scaling, mean/std, resize
    input: dict[str, Any] = field(default_factory=dict)
    # set by `prunekit report` where rows would otherwise share a name (prunekit.sweep.label_rows): the budget
    # ("MACs 0.3") when the runs' budgets differ, and the run directory relative to what the runs share
    budget: str | None = None
    run_label: str | None = None

    @property
    def name(self) -> str:
        return "dense" if self.strategy in DENSE_NAMES else self.strategy

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_dir(cls, run_dir: str) -> RunResult:
        path = os.path.join(run_dir, "result.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir} has no result.json: not a finished prunekit run directory")
        with open(path) as f:
            res = cls.from_dict(json.load(f))
        res.run_dir = run_dir
        return res
