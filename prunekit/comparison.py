"""Several strategies on one config, side by side: ``prunekit compare``.

    results, out_dir = compare(cfg, ["chex", "magnitude", "random"], dense=True)
    results, out_dir = compare(None, resume=out_dir)     # finish an interrupted comparison

Each strategy runs in a sub-directory of one compare directory (``trainer.run``); a strategy that fails
is recorded with its error (status "failed", or "diverged" when its loss stopped being finite) and the others
go on; the tables and plots are written by ``report``. The compare directory's ``compare.json`` (the config
and the strategies, written before the first run trains) lets ``resume`` finish what is not done: finished
and diverged runs are kept, unfinished ones continue from their checkpoint, failed and missing ones run again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

from . import checkpoint as ckpt
from .config import Config, ConfigError, from_dict
from .env import broadcast_object, make_env
from .results import DENSE_NAMES, RunResult
from .trainer import TrainingDiverged, check_strategies, resolve_config, run


def run_name(strategy: str) -> str:
    """The sub-directory of a compare directory that the run of ``strategy`` writes."""
    return "dense" if strategy in DENSE_NAMES else strategy.replace(":", "-").replace("/", "-")


def strategy_run_config(base: Config, cfg: Config, strategy: str, out: str, name: str) -> Config:
    """A copy of ``base`` that runs ``strategy`` with its own parameters from ``cfg`` (none for the dense
    run) into ``out/name``: one run of a comparison or a sweep."""
    sub = base.copy()
    sub.prune.params = {} if strategy in DENSE_NAMES else cfg.strategy_kwargs(strategy)
    sub.prune.strategy = strategy
    sub.run.out = out
    sub.run.name = name
    return sub


def check_distinct(strategies: list[str]) -> None:
    """A ConfigError when two names would train the same strategy into the same sub-directory (``chex,chex``;
    ``none,dense``; names that differ only in case)."""
    seen: dict[str, str] = {}
    for name in strategies:
        key = run_name(name).lower()
        if key in seen:
            what = f"{name!r} is named twice" if seen[key] == name else f"{seen[key]!r} and {name!r} are the same run"
            raise ConfigError(f"strategies to compare (--strategies): {what}; give each strategy once")
        seen[key] = name


def check_data_and_model(cfg: Config) -> None:
    """Build the dataset, the model (checked on the data's shape) and its channel graph once: a missing
    dataset or an unknown, misconfigured or untraceable model is one error, not a failed row per strategy."""
    import torch

    import prunekit as pk

    from .data import build_data
    from .models import build_model, check_model, resolve_leaf_modules

    data = build_data(cfg.data)
    model = build_model(cfg.model.name, data.num_classes, data.in_channels, data.input_size, **cfg.model.kwargs)
    leaf_modules = resolve_leaf_modules(model, cfg.model.leaf_modules)
    check_model(model, data.in_channels, data.input_size, data.num_classes, cfg.model.name)
    pk.build_graph(model, torch.zeros(1, data.in_channels, data.input_size, data.input_size), leaf_modules=leaf_modules)


COMPARE_FILE = "compare.json"
COMPARE_FORMAT = "prunekit-compare-1"


def load_compare(out_dir: str, trusted_factories: Iterable[str] = (), trust: bool = False) -> tuple[Config, list[str]]:
    """The config and strategies a compare directory was started with (its ``compare.json``), read as data:
    a model factory it names must be trusted, as for ``prunekit run --resume``."""
    from .rundir import check_run_model

    path = os.path.join(out_dir, COMPARE_FILE)
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--resume {out_dir}: no such directory")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--resume {out_dir}: no {COMPARE_FILE} there, so it is not a compare directory or was made by a prunekit "
            "before compare --resume; continue each run with `prunekit run --resume DIR`, then `prunekit report "
            f"{out_dir}`"
        )
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != COMPARE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {COMPARE_FORMAT!r}")
        cfg, names = from_dict(data["config"]), [str(s) for s in data["strategies"]]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"--resume {out_dir}: {COMPARE_FILE} is not readable ({e})") from None
    if not trust:
        check_run_model({"name": cfg.model.name, **cfg.model.kwargs}, out_dir, trusted_factories)
    return cfg, names


def resume_state(run_dir: str) -> tuple[str, RunResult]:
    """What ``compare --resume`` does with one strategy's run directory, and the directory's row
    (``sweep.run_state``): ``keep`` a finished or diverged run, ``continue`` one with a checkpoint (unfinished,
    or failed after it), ``rerun`` one without (failed before its first checkpoint, or missing; what a failure
    left there is removed)."""
    from .sweep import run_state

    state = run_state(run_dir)
    if state.status in ("ok", "diverged"):
        return "keep", state
    if os.path.exists(os.path.join(run_dir, ckpt.CHECKPOINT)):
        return "continue", state
    return "rerun", state


def compare(
    config: Config | dict[str, Any] | str | None,
    strategies: list[str] | None = None,
    dense: bool = False,
    out_dir: str | None = None,
    resume: str | None = None,
    trust_checkpoint: bool = False,
    trusted_factories: Iterable[str] = (),
) -> tuple[list[RunResult], str]:
    """Run each strategy (and a dense baseline when ``dense``) on the same config, in sub-directories of
    one compare directory; a strategy that fails is recorded with its error and the others go on.
    Writes comparison tables (Markdown/CSV/JSON) and plots there; returns (results, compare dir).

    ``resume``: a compare directory; its ``compare.json`` gives the config and strategies (``config``,
    ``strategies`` and ``dense`` are ignored). Finished and diverged runs are kept, unfinished ones continue
    from their checkpoint, failed and missing ones run again; then the tables are written again. The directory
    is read as data as in ``run(resume=...)``; ``trust_checkpoint`` trusts it whole."""
    if resume is not None:
        cfg, names = load_compare(resume, trusted_factories, trust_checkpoint)
        out_dir = resume
    else:
        cfg = resolve_config(config)
        if not strategies:
            raise ConfigError("strategies to compare (--strategies): none given; e.g. chex,magnitude,random")
        names = (["none"] if dense and not any(s in DENSE_NAMES for s in strategies) else []) + list(strategies)
    check_distinct(names)
    env = make_env(cfg)
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = os.path.join(cfg.run.out, cfg.run.name or f"compare-{cfg.data.name}-{cfg.model.name}-{stamp}")
    out_dir = os.path.abspath(broadcast_object(out_dir, env))
    check_strategies(cfg, names)  # every name and parameter, before the first run trains
    check_data_and_model(cfg)  # what every strategy's run would fail on alike fails once, before any directory
    if env.main and resume is None:
        plan = {"format": COMPARE_FORMAT, "strategies": names, "config": cfg.to_dict()}
        ckpt.write_json(os.path.join(out_dir, COMPARE_FILE), plan)
    if cfg.prune.params and cfg.prune.strategy not in names and env.main:
        print(
            f"[prunekit] prune.params are {cfg.prune.strategy}'s, which this comparison does not run; they are "
            "not used (give other strategies' parameters as prune.strategy_params.NAME.KEY)",
            file=sys.stderr,
        )
    results: list[RunResult] = []
    for name in names:
        sub = strategy_run_config(cfg, cfg, name, out_dir, run_name(name))
        sub_dir = os.path.join(out_dir, sub.run.name)
        state, row = resume_state(sub_dir) if resume is not None else ("rerun", None)
        if state == "keep":
            results.append(row)
            if env.main:
                print(f"[prunekit] {sub.run.name}: kept ({row.status}, {sub_dir})", file=sys.stderr)
            continue
        if state == "rerun" and row is not None and env.main:
            if os.path.isdir(sub_dir):  # a failure before the first checkpoint: it runs again in the same place
                print(f"[prunekit] {sub.run.name}: running again ({row.error})", file=sys.stderr)
                shutil.rmtree(sub_dir)
            else:
                print(f"[prunekit] {sub.run.name}: not run yet, running it", file=sys.stderr)
        elif state == "continue" and env.main:
            print(f"[prunekit] {sub.run.name}: continuing from its checkpoint ({sub_dir})", file=sys.stderr)
        try:
            if state == "continue":
                res = run(None, resume=sub_dir, trust_checkpoint=trust_checkpoint, trusted_factories=trusted_factories)
            else:
                res = run(sub)
        except KeyboardInterrupt as e:
            e.compare_dir = out_dir  # type: ignore[attr-defined]  # the CLI says how to resume the comparison
            raise
        except Exception as e:  # one failing strategy must not lose the others' results
            diverged = isinstance(e, TrainingDiverged)
            err = str(e) if diverged else f"{type(e).__name__}: {e}"
            res = RunResult(
                strategy=name,
                status="diverged" if diverged else "failed",
                error=err,
                dataset=cfg.data.name,
                model=cfg.model.name,
                seed=cfg.train.seed,
                epochs=cfg.train.epochs,
            )
            if env.main:
                failed_dir = os.path.join(out_dir, sub.run.name)
                os.makedirs(failed_dir, exist_ok=True)
                res.run_dir = failed_dir
                ckpt.write_text(os.path.join(failed_dir, "error.txt"), traceback.format_exc())
                ckpt.write_json(os.path.join(failed_dir, "result.json"), res.to_dict())
            print(f"[prunekit] strategy {name!r} {res.status}: {err}", file=sys.stderr)
        results.append(res)
    dense_res = next((r for r in results if r.strategy in DENSE_NAMES and r.status == "ok"), None)
    if dense_res is not None:
        for r in results:
            r.dense_top1 = dense_res.top1
    if env.main:
        from .report import write_reports

        write_reports(results, out_dir)
    return results, out_dir
