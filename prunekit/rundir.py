"""Run directories: their name, their creation (rank 0), and reading one back as data.

Run directory (rank 0 writes it):
    config.yaml     the resolved config           metrics.csv   one row per epoch
    result.json     the RunResult                 events.json   the controller's prune/regrow events
    checkpoint.pt   full training state (atomic)  checkpoint.json  epoch/batch/step of that checkpoint
    model_pruned.pt the slimmed model as a plan   run.log       the log

A directory is read back as data (``--resume``, ``prunekit export``): its config with ``load_config_of``,
and the model factory it names only when trusted (``check_run_model``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import yaml

from .config import Config, from_dict
from .data import DataBundle
from .env import Env, broadcast_object
from .plan import check_factory

MODEL_FACTORY = "prunekit.models:build_model"  # the factory a run's pruning plan and checkpoint name


def default_run_name(cfg: Config) -> str:
    """``STRATEGY-DATASET-MODEL-YYYYmmdd-HHMMSS``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    model = cfg.model.name.replace(":", "-").replace(".", "-").replace("/", "-")
    return f"{cfg.prune.strategy}-{cfg.data.name}-{model}-{stamp}"


def make_run_dir(cfg: Config, env: Env) -> str:
    """Create the run directory on rank 0 (a fresh name if it exists) and share its path with all ranks."""
    path = None
    if env.main:
        name = cfg.run.name or default_run_name(cfg)
        base = os.path.join(cfg.run.out, name)
        path, k = base, 2
        while os.path.exists(path) and os.listdir(path):
            path, k = f"{base}-{k}", k + 1
        os.makedirs(path, exist_ok=True)
        path = os.path.abspath(path)
    path = broadcast_object(path, env)
    assert path is not None
    return path


def model_spec(cfg: Config, data: DataBundle) -> dict[str, Any]:
    """Keyword arguments of ``prunekit.models.build_model`` that rebuild the dense architecture."""
    return {
        "name": cfg.model.name,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "input_size": data.input_size,
        **cfg.model.kwargs,
    }


def load_config_of(run_dir: str) -> Config:
    """The resolved config a run directory was written with."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        return from_dict(yaml.safe_load(f))


def check_run_model(spec: dict[str, Any], run_dir: str, trusted: Iterable[str] = ()) -> None:
    """Raise ValueError unless the model ``spec`` ({"name": ..., **kwargs} of ``build_model``) that the run
    directory ``run_dir`` names is safe to build: plain data, and a "package.module:factory" name only
    when trusted (torchvision, timm, prunekit, or named in ``trusted``; see ``prunekit.plan.check_factory``)."""
    try:
        check_factory(MODEL_FACTORY, spec, trusted, where=f"named by {run_dir}")
    except ValueError as e:
        raise ValueError(f"{e} (CLI: --plugins MODULE, or --trust-checkpoint to trust the run directory)") from None
