"""Accuracy at equal MACs on real data: CHEX against magnitude, random and Torch-Pruning's own pruner.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fmnist_accuracy.py              # 3 seeds, 50% and 70% MACs reduction
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fmnist_accuracy.py --quick      # 1 seed, 1 epoch, 2k samples, 50%
    .venv/bin/python benchmarks/fmnist_accuracy.py --epochs 15 --train-subset 20000 --seeds 3 --threads 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fmnist_accuracy.py --jobs 2     # two runs at a time
    ... --strategies chex magnitude --variant chex_once=chex --param chex_once.explore=false   # an ablation
    # the 5-seed comparison at 70% MACs reduction, full test set (docs/results/fmnist_accuracy_5seed.md),
    # 35 runs of ~12 min on one thread; the same command restarts it where it stopped (--resume):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fmnist_accuracy.py --epochs 15 --train-subset 5000 \
        --seeds 5 --targets 0.7 --threads 1 --jobs 1 --strategies chex magnitude random \
        --variant magnitude_half=magnitude --param magnitude_half.at=0.5 \
        --variant magnitude_gradual=magnitude --param magnitude_gradual.at=0.1 \
        --param magnitude_gradual.end=0.6 --variant chex_fixed=chex --param chex_fixed.coupled=fixed \
        --name fmnist_accuracy_5seed --resume

Fashion-MNIST (the IDX files of Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist) and the
CIFAR-style ResNet-20 on 1x28x28, with the recipe of configs/fashion_mnist_resnet20.yaml (SGD + Nesterov,
lr 0.1, cosine with 1 warm-up epoch, wd 5e-4, batch 128, crop + flip). For every seed: one dense run, and
for every MACs reduction target and strategy one ``pk.run`` from scratch with the same epochs, data order
and initial weights (same seed). Strategies: chex (its defaults), magnitude and random (prune once before
training, uniform widths), tp_magnitude and tp_bnscale (Torch-Pruning's MetaPruner with its
MagnitudeImportance / BNScaleImportance, benchmarks/tp_strategies.py). ``--train-subset N`` trains on the
first N training images (``data.limit_train``; Fashion-MNIST's order is shuffled, the first 10k hold
942-1027 images per class); the test set is the full 10k unless ``--test-subset``.

Cost: 3 seeds x (1 dense + 2 targets x 5 strategies) = 33 runs. The harness trains the masked (dense-size)
model, so every run costs about the same: on one thread of a shared 2-core AMD EPYC, ~4.4 ms per training
image and ~1.4 ms per test image per epoch, i.e. the defaults take ~5 h there; ``--quick`` ~1.5 min.
``--jobs N`` runs N of them at a time, each in its own process (results are the same: every run is seeded).

Every comparison to chex is the paired (same-seed) difference with its 95% t-interval, judged by the one
rule of ``benchmarks/stats.py`` (printed on the page). Writes ``fmnist_accuracy.json`` (every run, per
target x strategy summaries and comparisons, machine, versions, command) and ``fmnist_accuracy.md``
(tables and a "what we found" section computed from the numbers) to ``--out``
(default docs/results/; ``--name`` changes the file names), after every run, so an interrupted benchmark
leaves its partial results; ``--resume`` reads them back and runs only what is missing or failed (the
settings that decide a run's result must be the same, else it stops and says which differ; without an
earlier file it starts from scratch, so one command both starts and restarts a long benchmark).
``--reuse FILE`` takes finished runs from another result file where they are the same run under another
label (same seed, target and result settings; same strategy with the same effective parameters, CHEX's
default ``coupled`` included), so an ablation need not retrain the runs a comparison already holds; the
page says which runs came from where.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402
from bench_common import command_block, command_line, machine_info  # noqa: E402
from stats import RULE, describe, paired_comparison  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit.config import load_config  # noqa: E402
from prunekit.data import FASHION_FILES, FASHION_MNIST_ROOT, find_idx  # noqa: E402

CONFIG = ROOT / "configs" / "fashion_mnist_resnet20.yaml"
STRATEGIES = ["chex", "magnitude", "random", "tp_magnitude", "tp_bnscale"]
TP_STRATEGIES = ("tp_magnitude", "tp_bnscale")
QUICK = {"seeds": 1, "epochs": 1, "train_subset": 2000, "test_subset": 1000, "targets": [0.5]}


# ---------------------------------------------------------------------------------------------- setup


def fashion_mnist_root(root: str | None) -> str | None:
    """The folder holding the four Fashion-MNIST IDX files, or None."""
    for r in [root] if root else [FASHION_MNIST_ROOT, os.path.join(FASHION_MNIST_ROOT, "raw")]:
        if r and all(find_idx(r, stem) for stem in FASHION_FILES.values()):
            return r
    return None


def run_config(args: argparse.Namespace, strategy: str, seed: int, target: float | None, runs_dir: Path) -> Any:
    """The prunekit Config of one run (target: MACs reduction, None for dense)."""
    name = "dense" if target is None else f"{strategy}-r{round(target * 100)}"
    flags: dict[str, Any] = {
        "train.epochs": args.epochs,
        "train.seed": seed,
        "train.threads": args.threads,
        "train.device": args.device,
        # NCHW, as every run of the published pages used (channels_last became the CPU default later)
        "train.channels_last": False,
        "data.limit_train": args.train_subset,  # None: the whole split
        "data.limit_test": args.test_subset,
        "data.root": args.data_root,
        "prune.strategy": "none" if target is None else args.variants.get(strategy, strategy),
        "run.out": str(runs_dir),
        "run.name": f"{name}-seed{seed}",
        "run.checkpoint_steps": 0,
        "run.latency_runs": 5,
        "run.progress": "plain" if args.verbose else "off",
    }
    if target is not None:
        flags["prune.macs"] = round(1.0 - target, 6)
    if args.variants.get(strategy, strategy) in TP_STRATEGIES:
        flags["prune.params.input_size"] = 28
    for item in args.param or []:
        name, key, value = parse_param(item)
        if name == strategy and target is not None:
            flags[f"prune.params.{key}"] = value
    return load_config(str(CONFIG), flags=flags)


def parse_param(item: str) -> tuple[str, str, Any]:
    """``STRATEGY.KEY=VALUE`` (VALUE read as YAML) -> (strategy, key, value)."""
    head, sep, value = item.partition("=")
    name, dot, key = head.partition(".")
    if not sep or not dot or not name or not key:
        raise SystemExit(f"--param {item!r}: expected STRATEGY.KEY=VALUE, e.g. chex.delta_T=0.5")
    return name, key, yaml.safe_load(value)


def failed_row(strategy: str, seed: int, target: float | None, error: str | None, wall: float) -> dict:
    """The fields every row has (a run that produced no result has only these)."""
    return {
        "strategy": "dense" if target is None else strategy,
        "plan_strategy": strategy,
        "target_reduction": target,
        "seed": seed,
        "status": "failed",
        "error": error,
        "wall_s": wall,
    }


def one_run(args: argparse.Namespace, strategy: str, seed: int, target: float | None, runs_dir: Path) -> dict:
    cfg = run_config(args, strategy, seed, target, runs_dir)
    t0 = time.perf_counter()
    try:
        res = pk.run(cfg)
        status, error = res.status, res.error
    except Exception as e:  # one failing run must not lose the others
        res, status, error = None, "failed", f"{type(e).__name__}: {e}"
    row = failed_row(strategy, seed, target, error, time.perf_counter() - t0)
    row["status"] = status
    if res is not None:
        row.update(
            top1=res.top1,
            best_top1=res.best_top1,
            macs=res.macs,
            dense_macs=res.dense_macs,
            macs_reduction=res.macs_reduction,
            params=res.params,
            train_s=res.train_seconds,
            event_s=res.event_seconds,
            num_events=res.num_events,
            slim_max_abs_diff=res.slim_max_abs_diff,
            run_dir=res.run_dir,
        )
    return row


# ---------------------------------------------------------------------------------------------- statistics


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def summarize(rows: list[dict], targets: list[float], strategies: list[str]) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok" and r.get("top1") is not None]
    dense = {r["seed"]: r for r in ok if r["strategy"] == "dense"}
    d_top1 = [r["top1"] for r in dense.values()]
    out: dict[str, Any] = {
        "dense": {
            "n": len(d_top1),
            "top1_mean": _mean(d_top1),
            "top1_std": _std(d_top1),
            "wall_mean_s": _mean([r["wall_s"] for r in dense.values()]),
        },
        "targets": {},
    }
    for t in targets:
        per: dict[str, Any] = {}
        for s in strategies:
            sel = [r for r in ok if r["strategy"] == s and r["target_reduction"] == t]
            top1 = [r["top1"] for r in sel]
            deltas = [r["top1"] - dense[r["seed"]]["top1"] for r in sel if r["seed"] in dense]
            failed = [r for r in rows if r["strategy"] == s and r["target_reduction"] == t and r["status"] != "ok"]
            per[s] = {
                "n": len(sel),
                "failed": len(failed),
                "errors": sorted({r["error"] for r in failed if r.get("error")}),
                "top1_mean": _mean(top1),
                "top1_std": _std(top1),
                "top1_by_seed": {str(r["seed"]): r["top1"] for r in sel},
                "macs_reduction_mean": _mean([r["macs_reduction"] for r in sel]),
                "delta_dense_mean": _mean(deltas),
                "delta_dense_std": _std(deltas),
                "wall_mean_s": _mean([r["wall_s"] for r in sel]),
            }
        out["targets"][f"{t:g}"] = per
    return out


def comparisons(summary: dict[str, Any], strategies: list[str], base: str = "chex") -> dict[str, dict]:
    """{target: {strategy: paired_comparison(strategy, base)}} for every strategy with a finished run."""
    out: dict[str, dict] = {}
    for t, per in summary["targets"].items():
        if per.get(base, {}).get("top1_mean") is None:
            continue
        out[t] = {}
        for other in [s for s in strategies if s != base and per.get(s, {}).get("top1_mean") is not None]:
            c = paired_comparison(per[other]["top1_by_seed"], per[base]["top1_by_seed"])
            if c is not None:
                out[t][other] = c
    return out


def findings(summary: dict[str, Any], strategies: list[str]) -> list[str]:
    """Plain-language statements computed from the summary, with the rule of benchmarks/stats.py."""
    lines = []
    n_seeds = summary["dense"]["n"]
    comp = summary.get("vs_chex", {})
    for t, per in summary["targets"].items():
        red = f"{float(t) * 100:g}% MACs reduction"
        done = {s: v for s, v in per.items() if v["top1_mean"] is not None}
        if not done:
            lines.append(f"At {red}: no finished runs yet.")
            continue
        ranking = sorted(done, key=lambda s: -done[s]["top1_mean"])
        rank_txt = " > ".join(f"{s} {done[s]['top1_mean']:.2f}" for s in ranking)
        lines.append(f"At {red}, mean top-1 (%): {rank_txt}.")
        decided, undecided = [], []
        for other, c in comp.get(t, {}).items():
            if c["verdict"] == "better":
                decided.append(f"{other} is ahead of chex by {describe(c)}")
            elif c["verdict"] == "worse":
                decided.append(f"{other} is behind chex by {describe(c)}")
            elif c["verdict"] == "single seed":
                undecided.append(f"{other} - chex {describe(c)} (one seed: cannot decide)")
            else:
                undecided.append(f"{other} - chex {describe(c)}")
        if decided:
            lines.append(f"At {red}, the data decide: " + "; ".join(decided) + ".")
        if undecided:
            lines.append(
                f"At {red}, the data cannot decide (no clear difference, the 95% interval contains 0): "
                + "; ".join(undecided) + "."
            )
    if n_seeds:
        lines.append(
            RULE + " Short training on a subset: absolute accuracies are below fully trained Fashion-MNIST "
            "numbers, and rankings at this budget need not carry over to long schedules."
        )
    return lines


# ---------------------------------------------------------------------------------------------- output


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def write(out: Path, data: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = data["settings"].get("name", "fmnist_accuracy")
    tmp = out / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, out / f"{stem}.json")
    s, mc, summ = data["settings"], data["machine"], data["summary"]
    dense = summ["dense"]
    done, total = len(data["runs"]), data["runs_planned"]
    lines = [
        "# Accuracy at equal MACs: Fashion-MNIST, ResNet-20",
        "",
        ("" if data["complete"] else f"**Partial results: {done} of {total} runs finished.**\n\n")
        + f"ResNet-20 (CIFAR-style, option-B shortcuts) on Fashion-MNIST 1x28x28, trained from scratch for "
        f"{s['epochs']} epoch(s) on the first {s['train_subset'] or 60000} training images, top-1 on "
        f"{s['test_subset'] or 10000} test images (final epoch), seeds {s['seeds']}. Recipe: "
        "`configs/fashion_mnist_resnet20.yaml` (SGD + Nesterov, lr 0.1, cosine with 1 warm-up epoch, wd 5e-4, "
        "batch 128, crop + flip; no weight decay on BN parameters and biases, `train.decay_norm_and_bias: "
        "false`, for every run). Every strategy trains for the same epochs from the same initial weights "
        "and data order as the dense run of its seed; pruned channels are masked during training and the "
        "final model is slimmed and measured.",
        "",
        "Strategies: **chex** (its defaults: exploration every 2 epochs until 72% of training, regrow "
        "fraction 0.3 decaying on a cosine, pruned channels ranked at gamma = 0 and residual streams "
        + COUPLED_TEXT[s.get("chex_coupled", LEGACY_SETTINGS["chex_coupled"])]
        + "; BN statistics re-estimated before evaluating an epoch with an event), "
        "**magnitude** (L1 norm of the filters, uniform widths, pruned once before training unless a variant "
        "sets `at`, or `at`/`end` for gradual pruning on Zhu & Gupta's cubic schedule: docs/strategies.md), "
        "**random** (uniform widths, random channels, before training)"
        + (
            ", **tp_magnitude** / **tp_bnscale** (Torch-Pruning's `MetaPruner` with `MagnitudeImportance(p=2)` / "
            "`BNScaleImportance`, local ranking, its progressive 400-step schedule stopped where the MACs target "
            "is met, choosing once before training: see `benchmarks/tp_strategies.py`; at initialization every BN"
            " scale is 1, so tp_bnscale's choice is Torch-Pruning's tie order)"
            if set(TP_STRATEGIES) & {s["variants"].get(n, n) for n in s["strategies"]}
            else ""
        )
        + ". The MACs target is met within 1% "
        "by every strategy (prunekit's bisection over the global sparsity); *MACs reduction* is measured on "
        "the slimmed model. Delta = mean over seeds of (strategy - dense of the same seed), in points.",
        "",
        *(
            [f"Strategy parameters set for this run (`--param`): {', '.join(f'`{p}`' for p in s['params'])}.", ""]
            if s.get("params")
            else []
        ),
        *(
            [
                "Variants (`--variant`: a strategy run under another name with the parameters given for that "
                "name): " + ", ".join(f"**{k}** = {v}" for k, v in s["variants"].items()) + ".",
                "",
            ]
            if s.get("variants")
            else []
        ),
        f"Dense: top-1 **{_fmt(dense['top1_mean'])}** ± {_fmt(dense['top1_std'])} % "
        f"({dense['n']} run(s), mean wall {_fmt(dense['wall_mean_s'], '.0f')} s).",
        "",
    ]
    for t, per in summ["targets"].items():
        lines += [
            f"## {float(t) * 100:g}% MACs reduction (keep {100 - float(t) * 100:g}% of the dense MACs)",
            "",
            "| strategy | top-1 (%) mean ± std | delta to dense (pp) | MACs reduction | mean wall (s) | runs |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, v in per.items():
            runs = f"{v['n']}" + (f" ({v['failed']} failed)" if v["failed"] else "")
            red = "-" if v["macs_reduction_mean"] is None else f"{v['macs_reduction_mean'] * 100:.1f}%"
            delta = _fmt(v["delta_dense_mean"], "+.2f")
            if v["delta_dense_std"] is not None:
                delta += f" ± {v['delta_dense_std']:.2f}"
            lines.append(
                f"| {name} | {_fmt(v['top1_mean'])} ± {_fmt(v['top1_std'])} | {delta} | {red} "
                f"| {_fmt(v['wall_mean_s'], '.0f')} | {runs} |"
            )
        errors = sorted({e for v in per.values() for e in v["errors"]})
        if errors:
            lines += ["", "Failures: " + "; ".join(f"`{e}`" for e in errors)]
        comp = summ.get("vs_chex", {}).get(t, {})
        if comp:
            lines += [
                "",
                "Paired difference to chex (strategy - chex, same seeds), top-1 points:",
                "",
                "| strategy | seeds | mean difference | std | 95% t-interval | ahead of chex in | verdict |",
                "|---|---:|---:|---:|---|---:|---|",
            ]
            for name, c in comp.items():
                ci = "-" if c["ci95"] is None else f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
                verdict = {
                    "better": "ahead of chex",
                    "worse": "behind chex",
                    "single seed": "one seed: cannot decide",
                }.get(c["verdict"], "no clear difference (cannot decide)")
                lines.append(
                    f"| {name} | {c['n']} | {c['diff_mean']:+.2f} | {_fmt(c['diff_std'])} | {ci} "
                    f"| {c['wins']}/{c['n']} | {verdict} |"
                )
        lines.append("")
    lines += ["## What we found", ""] + [f"- {f}" for f in data["findings"]] + [""]
    lines += [
        f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['torch_threads']} torch thread(s) per run"
        + (f", GPU {mc['cuda']}" if mc["cuda"] else "")
        + f"; {mc['platform']}, Python {mc['python']}; torch {mc['torch']}, torchvision {mc['torchvision']}, "
        f"torch-pruning {mc['torch_pruning']}, prunekit {mc['prunekit']}. Started {data['started']}, "
        f"{data['elapsed_s'] / 60:.1f} min so far. Wall time per run includes data loading, evaluation "
        "every epoch, slimming and a latency measurement.",
        "",
        *command_block(data["command"]),
    ]
    reused: dict[str, set[str]] = {}
    for r in data["runs"]:
        if r.get("reused_from"):
            file, label = r["reused_from"].split(":", 1)
            reused.setdefault(file, set()).add(f"{label} -> {r['plan_strategy']}")
    for file, labels in reused.items():
        n = sum(r.get("reused_from", "").startswith(file + ":") for r in data["runs"])
        src = (data.get("reused_files") or {}).get(file) or {}
        where = (src.get("machine") or {}).get("cpu")
        lines += [
            f"Reused: {n} run(s) taken from `{file}` (`--reuse`): the same runs (seed, target, result settings, "
            "strategy and its effective parameters) under its labels "
            + ", ".join(f"`{x}`" for x in sorted(labels))
            + (f" (its machine record, of the session that last wrote it: {where}, started {src.get('started')})"
               if where else "")
            + "; the time above does not include theirs, and wall times compare only within one machine.",
            "",
        ]
    if data.get("resumed_from"):
        r = data["resumed_from"]
        lines += [
            f"Resumed: {r['runs_kept']} run(s) kept from the earlier result file of this command (started "
            f"{r['started']}: `{r['command']}`); the time above includes theirs.",
            "",
        ]
    (out / f"{stem}.md").write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run, every strategy (default 10)")
    ap.add_argument(
        "--param", action="append", metavar="STRATEGY.KEY=VALUE",
        help="a strategy parameter for this benchmark, repeatable (e.g. chex.delta_T=0.5)",
    )  # fmt: skip
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds 0..N-1 (default 3)")
    ap.add_argument(
        "--targets", type=float, nargs="+", default=None,
        help="MACs reductions, fractions removed (default 0.5 0.7)",
    )  # fmt: skip
    ap.add_argument("--train-subset", type=int, default=None, help="train on the first N images (default 10000)")
    ap.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images (default all)")
    ap.add_argument("--strategies", nargs="+", default=None, help=f"default: {' '.join(STRATEGIES)}")
    ap.add_argument(
        "--variant", action="append", metavar="LABEL=STRATEGY",
        help="also run STRATEGY under the name LABEL, with its own --param LABEL.KEY=VALUE (ablations), "
        "e.g. --variant chex_once=chex --param chex_once.explore=false",
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    ap.add_argument(
        "--jobs", type=int, default=1,
        help="runs in parallel, each in its own process (default 1); jobs x threads should not exceed the cores",
    )  # fmt: skip
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    ap.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files")
    ap.add_argument("--runs-dir", default=None, help="parent of the run directories (default runs/fmnist_accuracy-*)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 2k train / 1k test images, 50%% only")
    ap.add_argument("--verbose", action="store_true", help="the harness's per-epoch log lines")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    ap.add_argument("--name", default="fmnist_accuracy", help="output file names: NAME.md and NAME.json")
    ap.add_argument(
        "--resume", action="store_true",
        help="keep the finished runs of an earlier NAME.json with the same settings and run only the others",
    )  # fmt: skip
    ap.add_argument(
        "--reuse", action="append", metavar="FILE.json", default=[],
        help="take finished runs from another result file of this benchmark where they are the same run: same "
        "seed, target and result settings, same strategy with the same effective parameters under any label "
        "(e.g. chex_fixed there = chex here once fixed is the default); repeatable",
    )  # fmt: skip
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else {"seeds": 3, "epochs": 10, "train_subset": 10000, "targets": [0.5, 0.7]}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.strategies = args.strategies or list(STRATEGIES)
    args.variants = {}
    for item in args.variant or []:
        label, sep, base = item.partition("=")
        if not sep or not label or not base or label in args.strategies or label in args.variants:
            ap.error(f"--variant {item!r}: expected a new LABEL=STRATEGY, e.g. chex_once=chex")
        args.variants[label] = base
    args.strategies += list(args.variants)
    if args.seeds < 1 or args.epochs < 1 or args.jobs < 1:
        ap.error("--seeds, --epochs and --jobs must be >= 1")
    if any(not 0.0 < t < 1.0 for t in args.targets):
        ap.error(f"--targets are fractions of MACs removed, strictly between 0 and 1; got {args.targets}")
    for key in ("train_subset", "test_subset"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = command_line("fmnist_accuracy.py", argv)
    if fashion_mnist_root(args.data_root) is None:
        sys.exit(
            f"Fashion-MNIST IDX files not found in {args.data_root or FASHION_MNIST_ROOT}: install Debian's "
            "dataset-fashion-mnist package or pass --data-root /folder/with/the/four/files"
        )
    _worker_init(args.threads, any(args.variants.get(s, s) in TP_STRATEGIES for s in args.strategies))
    known = set(pk.list_strategies())
    unknown = sorted({args.variants.get(s, s) for s in args.strategies} - known)
    if unknown:
        sys.exit(f"unknown strategies {unknown}; registered: {', '.join(sorted(known))}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs_dir = Path(args.runs_dir) if args.runs_dir else ROOT / "runs" / f"{args.name}-{stamp}"
    seeds = list(range(args.seeds))
    plan: list[tuple[int, str, float | None]] = []
    for seed in seeds:  # seed-major: a partial result has every strategy of the first seeds
        plan.append((seed, "dense", None))
        plan += [(seed, s, t) for t in args.targets for s in args.strategies]
    data: dict[str, Any] = {
        "machine": machine_info(args.threads),
        "command": command.strip(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "settings": {
            "epochs": args.epochs,
            "seeds": seeds,
            "targets": args.targets,
            "strategies": args.strategies,
            "variants": args.variants,
            "train_subset": args.train_subset,
            "params": args.param or [],
            "test_subset": args.test_subset,
            "threads": args.threads,
            "device": args.device,
            "config": str(CONFIG.relative_to(ROOT)),
            "quick": args.quick,
            "runs_dir": str(runs_dir),
            "name": args.name,
            "chex_coupled": chex_default_coupled(),
        },
        "runs_planned": len(plan),
        "runs": [],
        "complete": False,
    }
    out = Path(args.out)
    order = {(seed, strategy, target): i for i, (seed, strategy, target) in enumerate(plan)}
    earlier_s = 0.0
    if args.resume:
        data["runs"], earlier_s, data["resumed_from"] = resumable_runs(out / f"{args.name}.json", data, order)
        done = {(r["seed"], r["plan_strategy"], r["target_reduction"]) for r in data["runs"]}
        plan = [p for p in plan if p not in done]
        print(f"--resume: {len(done)} finished run(s) kept, {len(plan)} to run", flush=True)
    data["reused_files"] = {}
    for path in args.reuse:
        rows, data["reused_files"][Path(path).name] = reusable_runs(Path(path), data["settings"], plan)
        data["runs"] += rows
        data["runs"].sort(key=lambda r: order[(r["seed"], r["plan_strategy"], r["target_reduction"])])
        taken = {(r["seed"], r["plan_strategy"], r["target_reduction"]) for r in rows}
        plan = [p for p in plan if p not in taken]
        print(f"--reuse: {len(rows)} run(s) taken from {path}, {len(plan)} to run", flush=True)
    t_start = time.perf_counter() - earlier_s

    def save() -> None:  # after every run, so an interrupted benchmark leaves its partial results
        data["complete"] = len(data["runs"]) == data["runs_planned"]
        data["elapsed_s"] = time.perf_counter() - t_start
        data["summary"] = summarize(data["runs"], args.targets, args.strategies)
        data["summary"]["vs_chex"] = comparisons(data["summary"], args.strategies)
        data["findings"] = findings(data["summary"], args.strategies)
        write(out, data)

    for n, row in enumerate(run_plan(args, plan, runs_dir), len(data["runs"]) + 1):
        data["runs"].append(row)
        data["runs"].sort(key=lambda r: order[(r["seed"], r["plan_strategy"], r["target_reduction"])])
        what = "dense" if row["target_reduction"] is None else f"{row['strategy']} @ {row['target_reduction'] * 100:g}%"
        res = f"top1 {row['top1']:.2f}%" if row.get("top1") is not None else f"FAILED: {row['error']}"
        red = f", MACs -{row['macs_reduction'] * 100:.1f}%" if row.get("macs_reduction") else ""
        print(f"[{n}/{data['runs_planned']}] seed {row['seed']} {what}: {res}{red}, {row['wall_s']:.0f}s", flush=True)
        save()
    if not plan:  # everything was already there: still rewrite the files with this command
        save()
    for line in data["findings"]:
        print(line)
    return data


# Settings that change what a run computes; the others (seeds, targets, strategies, threads, jobs) only
# change which runs there are or how fast they go.
RESULT_SETTINGS = ("epochs", "train_subset", "test_subset", "params", "variants", "config", "quick", "device",
                   "chex_coupled")  # fmt: skip
# what a result file written before a setting was recorded ran with: CHEX ranked coupled groups by their
# mean |gamma| until issue 15's measurement made "fixed" the default
LEGACY_SETTINGS = {"chex_coupled": "mean"}


COUPLED_TEXT = {
    "mean": "ranked by the mean |gamma| of their BN layers",
    "max": "ranked by the max |gamma| of their BN layers",
    "fixed": "held at the budget's uniform width",
}


def chex_default_coupled() -> str:
    """CHEX's default ``coupled`` in this checkout (recorded with the results: it changed once)."""
    return pk.get_strategy("chex").coupled


def resumable_runs(path: Path, data: dict[str, Any], order: dict) -> tuple[list[dict], float, dict | None]:
    """The finished rows of an earlier result file that belong to this plan, the time they took, and where they
    came from. Settings that would make those rows a different experiment are an error, not a silent mix."""
    if not path.exists():  # nothing to resume yet: the same command starts from scratch (and restarts it later)
        print(f"--resume: {path} does not exist yet; starting from scratch", flush=True)
        return [], 0.0, None
    try:
        old = json.loads(path.read_text())
        old_settings = old["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        sys.exit(f"--resume: {path} is not a result file of this benchmark ({type(e).__name__}: {e})")
    new_settings = data["settings"]
    differ = [k for k in RESULT_SETTINGS if old_settings.get(k, LEGACY_SETTINGS.get(k)) != new_settings.get(k)]
    if differ:
        detail = "; ".join(f"{k}: was {old_settings.get(k)!r}, now {new_settings.get(k)!r}" for k in differ)
        sys.exit(f"--resume: {path} was made with other settings ({detail}); pass the same ones, or a new --name")
    kept = [
        r
        for r in old.get("runs", [])
        if r.get("status") == "ok" and (r["seed"], r["plan_strategy"], r["target_reduction"]) in order
    ]
    kept.sort(key=lambda r: order[(r["seed"], r["plan_strategy"], r["target_reduction"])])
    info = {"started": old.get("started"), "command": old.get("command"), "runs_kept": len(kept)}
    return kept, float(old.get("elapsed_s") or 0.0), info


def run_identity(settings: dict[str, Any], label: str) -> tuple[str, tuple]:
    """What a planned run computes, independent of its label: the registered strategy and its effective
    parameters (the ``--param`` entries of the label, and CHEX's default ``coupled`` where none sets it)."""
    if label == "dense":
        return "dense", ()
    base = (settings.get("variants") or {}).get(label, label)
    params = {}
    for item in settings.get("params") or []:
        name, key, value = parse_param(item)
        if name == label:
            params[key] = value
    if base == "chex":
        params.setdefault("coupled", settings.get("chex_coupled", LEGACY_SETTINGS["chex_coupled"]))
    return base, tuple(sorted((k, json.dumps(v)) for k, v in params.items()))


# result settings a reused run must share with this benchmark; its label and parameters are matched per run
REUSE_SETTINGS = tuple(k for k in RESULT_SETTINGS if k not in ("params", "variants", "chex_coupled"))


def reusable_runs(path: Path, settings: dict[str, Any], plan: list[tuple]) -> tuple[list[dict], dict]:
    """The finished rows of another result file that are runs of ``plan`` (under any label), relabelled and
    marked with where they came from, and that file's machine record and start."""
    try:
        other = json.loads(path.read_text())
        other_settings = other["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        sys.exit(f"--reuse: {path} is not a readable result file of this benchmark ({type(e).__name__}: {e})")
    differ = [k for k in REUSE_SETTINGS if other_settings.get(k) != settings.get(k)]
    if differ:
        detail = "; ".join(f"{k}: {other_settings.get(k)!r} there, {settings.get(k)!r} here" for k in differ)
        sys.exit(f"--reuse: {path} was made with other settings ({detail}); its runs are not runs of this plan")
    wanted: dict[tuple, tuple] = {}
    for seed, label, target in plan:
        wanted.setdefault((seed, run_identity(settings, label), target), (seed, label, target))
    rows = []
    for r in other.get("runs", []):
        key = (r["seed"], run_identity(other_settings, r["plan_strategy"]), r["target_reduction"])
        if r.get("status") == "ok" and key in wanted:
            seed, label, target = wanted.pop(key)
            rows.append({**r, "strategy": "dense" if target is None else label, "plan_strategy": label,
                         "reused_from": f"{path.name}:{r['plan_strategy']}"})  # fmt: skip
    return rows, {"machine": other.get("machine"), "started": other.get("started")}


def _worker_init(threads: int, tp: bool) -> None:
    """Per process: torch threads, and Torch-Pruning's strategies registered when the plan uses them."""
    if tp:
        import benchmarks.tp_strategies  # noqa: F401  (registers tp_magnitude and tp_bnscale)
    torch.set_num_threads(threads)


def run_plan(args: argparse.Namespace, plan: list[tuple[int, str, float | None]], runs_dir: Path) -> Iterator[dict]:
    """The rows of ``plan``'s runs as they finish: one after the other in this process (``--jobs 1``), or
    ``--jobs`` at a time in fresh (spawned) worker processes; a worker that dies is a failed row."""
    if args.jobs == 1:
        for seed, strategy, target in plan:
            yield one_run(args, strategy, seed, target, runs_dir)
        return
    tp = any(args.variants.get(s, s) in TP_STRATEGIES for s in args.strategies)
    ctx = multiprocessing.get_context("spawn")  # a fork after torch has started threads can deadlock
    with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_worker_init, initargs=(args.threads, tp)) as ex:
        futures = {ex.submit(one_run, args, strategy, seed, target, runs_dir): (seed, strategy, target)
                   for seed, strategy, target in plan}  # fmt: skip
        for fut in as_completed(futures):
            seed, strategy, target = futures[fut]
            try:
                yield fut.result()
            except Exception as e:  # the worker process died (killed, out of memory)
                yield failed_row(strategy, seed, target, f"{type(e).__name__}: {e}", 0.0)


if __name__ == "__main__":
    main()
