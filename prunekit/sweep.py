"""Comparisons that outgrow one machine: the runs of ``prunekit compare`` as independent ``prunekit run``
commands, and ``prunekit report`` gathering whatever finished back into one table.

    prunekit compare --strategies chex,magnitude,random --dense --name sweep --emit-commands cmds.txt
    parallel -j 4 < cmds.txt                 # or a Slurm job array, Ray, a cloud batch queue, a shell loop
    prunekit report runs/sweep               # the table compare prints; missing, unfinished, failed runs marked

``emit_commands`` writes, under the shared output root, one config per run (``configs/<run>.yaml``: what
``compare`` would give that run) and ``sweep.json`` (the runs planned), and one line per run to the commands
file: ``cd <where compare was called> && prunekit run --config <root>/configs/<run>.yaml`` (plus ``--plugins``
and ``--nproc`` when given). Each command writes ``<root>/<run>/``, as ``compare`` does; a command run again
writes ``<run>-2`` beside it, and ``gather`` takes the newest finished one.

``gather`` reads run directories, compare directories and sweep roots: one row per run, the dense baseline
first, each run's Δ top-1 against the dense run of its own directory, and a ``budget`` / ``run`` column when
rows would otherwise share a name (several compare directories, several budgets).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from typing import Any

from . import checkpoint as ckpt
from .config import Config, ConfigError
from .results import DENSE_NAMES, ERROR_FILE, RunResult
from .strategy import Budget

MANIFEST = "sweep.json"
FORMAT = "prunekit-sweep/1"


# ---------------------------------------------------------------------------------------- emit


def sweep_root(cfg: Config) -> str:
    """The output root of a comparison of ``cfg``: ``run.out/run.name``, or ``compare-<data>-<model>-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.abspath(
        os.path.join(cfg.run.out, cfg.run.name or f"compare-{cfg.data.name}-{cfg.model.name}-{stamp}")
    )


def emit_commands(
    cfg: Config,
    strategies: list[str],
    dense: bool,
    path: str,
    plugins: list[str] | None = None,
    nproc: int | None = None,
    root: str | None = None,
) -> tuple[list[str], str]:
    """Write the ``prunekit run`` command of every run ``compare(cfg, strategies, dense)`` would make to
    ``path``, one per line, with their configs and the manifest under the output root; returns (commands,
    root). Checks every strategy name and parameter first; nothing is trained."""
    from .comparison import check_distinct, run_name, strategy_run_config
    from .trainer import check_strategies

    check_distinct(strategies)
    cfg.budget_kwargs()  # a budget that cannot work fails here, not in every job
    names = (["none"] if dense and not any(s in DENSE_NAMES for s in strategies) else []) + list(strategies)
    check_strategies(cfg, names)
    root = os.path.abspath(root) if root else sweep_root(cfg)
    if os.path.isdir(root) and os.listdir(root):
        raise ConfigError(f"{root} exists and is not empty; give the sweep another --name (or --out)")
    if os.path.isdir(path):
        raise ConfigError(f"--emit-commands {path}: that is a directory; give a file name")
    base = cfg.copy()
    if base.data.root:  # the commands may start elsewhere: where compare was called, data.root meant this
        base.data.root = os.path.abspath(base.data.root)
    cwd = os.getcwd()
    tail = []
    if plugins:
        tail += ["--plugins", ",".join(plugins)]
    if nproc:
        tail += ["--nproc", str(nproc)]
    runs, commands = [], []
    for name in names:
        sub = strategy_run_config(base, cfg, name, root, run_name(name))
        config = os.path.join(root, "configs", f"{sub.run.name}.yaml")
        ckpt.write_text(config, sub.to_yaml())
        command = f"cd {shlex.quote(cwd)} && " + shlex.join(["prunekit", "run", "--config", config, *tail])
        runs.append({"name": sub.run.name, "strategy": name, "config": config, "command": command})
        commands.append(command)
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "strategies": list(strategies),
        "dense": dense,
        "runs": runs,
    }
    ckpt.write_json(os.path.join(root, MANIFEST), manifest)
    ckpt.write_text(path, "".join(c + "\n" for c in commands))
    return commands, root


# ---------------------------------------------------------------------------------------- gather


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _last_line(path: str) -> str:
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "unknown error"
    return lines[-1] if lines else "unknown error"


def _config(run_dir: str) -> Config | None:
    from .rundir import load_config_of

    try:
        return load_config_of(run_dir)
    except Exception:  # a broken or missing config.yaml: the row just has no budget
        return None


def run_state(run_dir: str, strategy: str | None = None) -> RunResult:
    """The row of one run directory: its result.json, or a row saying it failed (error.txt), is unfinished
    (a checkpoint but no result) or is missing (no directory)."""
    if os.path.exists(os.path.join(run_dir, "result.json")):
        return RunResult.from_dir(run_dir)
    cfg = _config(run_dir)
    res = RunResult(strategy=strategy or (cfg.prune.strategy if cfg else os.path.basename(run_dir)), run_dir=run_dir)
    if cfg is not None:
        res.dataset, res.model, res.seed, res.epochs = cfg.data.name, cfg.model.name, cfg.train.seed, cfg.train.epochs
    if not os.path.isdir(run_dir):
        res.status = "missing"
        res.error = "no run directory (not run yet, or it failed before its first checkpoint: see its job's log)"
    elif os.path.exists(os.path.join(run_dir, ERROR_FILE)):
        res.status, res.error = "failed", _last_line(os.path.join(run_dir, ERROR_FILE))
    else:
        info = _read_json(os.path.join(run_dir, ckpt.CHECKPOINT_INFO)) or {}
        done = f"epoch {info.get('epoch', 0)} of {res.epochs}" if res.epochs else "no result yet"
        res.status = "unfinished"
        res.error = f"{done} (still running, or stopped: prunekit run --resume {run_dir})"
    return res


def _attempts(root: str, name: str) -> list[str]:
    """``root/name`` and the ``root/name-K`` directories a command run again wrote, oldest first."""
    pattern = re.compile(re.escape(name) + r"-(\d+)$")
    more = sorted(
        (int(m.group(1)), e) for e in (os.listdir(root) if os.path.isdir(root) else []) if (m := pattern.match(e))
    )
    return [os.path.join(root, name)] + [os.path.join(root, e) for _, e in more]


def _from_manifest(root: str, manifest: dict[str, Any]) -> list[RunResult]:
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("runs"), list):
        raise ValueError(f"{os.path.join(root, MANIFEST)} is not a prunekit sweep manifest ({FORMAT})")
    out = []
    for run in manifest["runs"]:
        states = [run_state(d, run["strategy"]) for d in _attempts(root, run["name"]) if os.path.isdir(d)]
        ok = [s for s in states if s.status == "ok"]
        state = (
            ok[-1] if ok else (states[-1] if states else run_state(os.path.join(root, run["name"]), run["strategy"]))
        )
        out.append(state)
    return out


def _from_dir(path: str) -> list[RunResult]:
    """The runs of a run directory, a compare directory or a sweep root."""
    manifest = _read_json(os.path.join(path, MANIFEST))
    if manifest is not None:
        return _from_manifest(path, manifest)
    if os.path.exists(os.path.join(path, "result.json")) or os.path.exists(os.path.join(path, "config.yaml")):
        return [run_state(path)]
    out = []
    for sub in sorted(os.listdir(path)):
        d = os.path.join(path, sub)
        if os.path.exists(os.path.join(d, "result.json")) or os.path.exists(os.path.join(d, "config.yaml")):
            out.append(run_state(d))
    return out


def budget_label(cfg: Config | None) -> str | None:
    """ "sparsity 0.5", "MACs 0.3", "latency 0.6" (", round_to 8" when not 1) for a pruned run's config."""
    if cfg is None or cfg.prune.strategy in DENSE_NAMES:
        return None
    kw = cfg.budget_kwargs()
    if kw["round_to"] is None:
        kw["round_to"] = 1
    return Budget(**kw).describe()


def label_rows(results: list[RunResult]) -> None:
    """Fill ``budget`` when the pruned runs' budgets differ and ``run_label`` (the run directory relative to
    what all share) when rows would still share a name, so that every row of the table is told apart."""
    budgets = [budget_label(_config(r.run_dir)) if r.run_dir else None for r in results]
    if len({b for b, r in zip(budgets, results) if r.strategy not in DENSE_NAMES and b is not None}) > 1:
        for r, b in zip(results, budgets):
            r.budget = b
    keys = [(r.name, r.budget) for r in results]
    if len(set(keys)) < len(keys):
        dirs = [os.path.abspath(r.run_dir) for r in results if r.run_dir]
        common = os.path.commonpath(dirs) if dirs else ""
        parent = os.path.dirname(common) if len(set(dirs)) == 1 else common
        for r in results:
            r.run_label = os.path.relpath(os.path.abspath(r.run_dir), parent) if r.run_dir else r.name


def gather(paths: list[str]) -> list[RunResult]:
    """Every run under ``paths`` (run directories, compare directories, sweep roots), one row each: dense runs
    first, Δ top-1 against the dense run of the same directory (or the only dense run), rows told apart."""
    results: list[RunResult] = []
    for p in paths:
        results += _from_dir(p)
    seen, unique = set(), []
    for r in results:  # a directory given twice (or inside a compare directory also given) counts once
        key = os.path.abspath(r.run_dir) if r.run_dir else id(r)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    results = sorted(unique, key=lambda r: r.strategy not in DENSE_NAMES)  # stable: dense first, order kept
    dense_ok = [r for r in results if r.strategy in DENSE_NAMES and r.status == "ok" and r.top1 is not None]
    by_parent = {os.path.dirname(os.path.abspath(r.run_dir)): r for r in dense_ok if r.run_dir}
    for r in results:
        parent = os.path.dirname(os.path.abspath(r.run_dir)) if r.run_dir else None
        dense = by_parent.get(parent) or (dense_ok[0] if len(dense_ok) == 1 else None)
        if dense is not None:
            r.dense_top1 = dense.top1
    label_rows(results)
    return results


__all__ = ["MANIFEST", "budget_label", "emit_commands", "gather", "label_rows", "run_state", "sweep_root"]
