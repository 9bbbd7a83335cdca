"""The training harness, by its old single-module name: every name ``prunekit.harness`` exported, re-exported
from the one-job modules it was split into. New code imports from those modules:

    results.py     RunResult, DENSE_NAMES                    what a run produced (result.json)
    env.py         Env, make_env, seed_everything, ...       device, AMP, DDP ranks, seeding, collectives
    optim.py       build_optimizer, param_groups, lr_factor  optimizer and LR schedule
    evaluation.py  evaluate, recalibrate_bn, logits          top-1/top-5/loss; BatchNorm re-estimation
    latency.py     measure_latency                           dense vs slimmed wall time
    rundir.py      make_run_dir, load_config_of, ...         run directories: name, create, read back, trust
    runlog.py      RunLog, Progress                          console + run.log, the progress bar
    trainer.py     run, Trainer, check_strategies, ...       the training loop, top to bottom
    comparison.py  compare                                   several strategies side by side
    export.py      export_run                                a run's slimmed model as a plan + LOAD.md

A ``monkeypatch.setattr("prunekit.harness.X", ...)`` does not reach the module that uses X: patch X where
it is defined (e.g. ``prunekit.latency.measure_latency`` is used as ``prunekit.trainer.measure_latency``).
"""

from __future__ import annotations

# every name below was importable from prunekit.harness; keep them so (F401: re-exports)
from .comparison import compare  # noqa: F401
from .env import Env, events_digest, make_env, mask_digest, seed_everything  # noqa: F401
from .env import autocast as _autocast  # noqa: F401
from .env import init_distributed as _init_distributed  # noqa: F401
from .env import to_device as _to_device  # noqa: F401
from .evaluation import evaluate, recalibrate_bn  # noqa: F401
from .evaluation import logits as _logits  # noqa: F401
from .export import export_run  # noqa: F401
from .latency import measure_latency  # noqa: F401
from .optim import build_optimizer, lr_factor, param_groups  # noqa: F401
from .plan import load_pruned  # noqa: F401
from .results import DENSE_NAMES, RunResult  # noqa: F401
from .rundir import MODEL_FACTORY, check_run_model, default_run_name, load_config_of, make_run_dir, model_spec  # noqa: F401
from .runlog import Progress as _Progress  # noqa: F401
from .runlog import RunLog as _RunLog  # noqa: F401
from .trainer import SMALL_MODEL_MACS, Trainer, check_strategies, log, make_controller, run  # noqa: F401
from .trainer import Trainer as _Trainer  # noqa: F401
from .trainer import resolve_config as _resolve  # noqa: F401

__all__ = [
    "RunResult",
    "compare",
    "export_run",
    "load_pruned",
    "evaluate",
    "load_config_of",
    "lr_factor",
    "mask_digest",
    "measure_latency",
    "run",
]
