"""CHEX ablation: which of its parts help or hurt on a short CPU schedule, against magnitude and random.

    .venv/bin/python benchmarks/chex_ablation.py                 # digits, ResNet-20, 50% MACs, 3 seeds, 20 epochs
    .venv/bin/python benchmarks/chex_ablation.py --epochs 40 --seeds 5
    .venv/bin/python benchmarks/chex_ablation.py --quick         # 1 seed, 2 epochs (smoke test)
    # how coupled groups (residual streams) take part in the allocation, at 70% MACs reduction, 5 seeds:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chex_ablation.py --macs 0.3 --seeds 5 --name chex_coupled \
        --variants "chex coupled=mean" "chex coupled=max" --resume

Every variant trains the same model from the same initial weights and data order per seed, at the same MACs
budget (kept within 1%), on the embedded digits data, so the whole table runs in minutes on 2 CPU cores.
Variants switch off one part of CHEX at a time (docs/strategies.md has the parameters):
``explore=false`` (prune once to S before training: no exploration), ``regrow_by=none`` / ``random``,
``allocation=uniform`` (no BN-scale re-allocation), ``delta_T`` smaller/larger, ``regrow_init=zero``,
``pruned_gamma=mru`` (pruned channels ranked by their last |gamma| instead of 0), ``coupled=mean`` /
``coupled=max`` (residual streams ranked by the mean or the max |gamma| of their BN layers instead of held at
the budget's uniform width, the default). CHEX's default
``coupled`` is recorded with the results (it changed once: files without it ran with ``mean``) and
``--resume`` refuses a file made under another one. Each variant is compared with the defaults by the paired (same-seed)
difference and its 95% t-interval (the rule of benchmarks/stats.py). Writes ``NAME.md`` and ``NAME.json``
(default chex_ablation) to ``--out`` (default docs/results/) after every run; ``--resume`` keeps the
finished runs of an earlier NAME.json made with the same epochs and MACs and runs only the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import command_block, command_line, machine_info
from stats import RULE, describe, paired_comparison

import prunekit as pk
from prunekit.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# (label, strategy, params)
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("chex (defaults)", "chex", {}),
    ("chex delta_T=0.5", "chex", {"delta_T": 0.5}),
    ("chex delta_T=5", "chex", {"delta_T": 5.0}),
    ("chex explore=false", "chex", {"explore": False}),
    ("chex regrow_by=none", "chex", {"regrow_by": "none"}),
    ("chex regrow_by=random", "chex", {"regrow_by": "random"}),
    ("chex allocation=uniform", "chex", {"allocation": "uniform"}),
    ("chex regrow_init=zero", "chex", {"regrow_init": "zero"}),
    ("chex pruned_gamma=mru", "chex", {"pruned_gamma": "mru"}),
    ("chex coupled=mean", "chex", {"coupled": "mean"}),
    ("chex coupled=max", "chex", {"coupled": "max"}),
    ("magnitude", "magnitude", {}),
    ("random", "random", {}),
]


def one_run(label: str, strategy: str, params: dict, seed: int, args: argparse.Namespace, out: Path) -> dict:
    flags = {
        "train.epochs": args.epochs, "train.seed": seed, "train.threads": args.threads,
        "prune.strategy": strategy, "prune.macs": args.macs, "prune.params": params,
        "run.out": str(out / "runs"), "run.name": f"{label.replace(' ', '_').replace('=', '-')}-seed{seed}",
        "run.progress": "off", "run.latency_runs": 3,
    }  # fmt: skip
    t = time.perf_counter()
    res = pk.run(load_config(None, flags=flags))
    return {"variant": label, "strategy": strategy, "params": params, "seed": seed, "status": res.status,
            "top1": res.top1, "macs_reduction": res.macs_reduction, "events": res.num_events,
            "wall_s": time.perf_counter() - t}  # fmt: skip


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    base = {str(r["seed"]): r["top1"] for r in runs if r["variant"] == BASE and r["status"] == "ok"}
    for label, _, _ in VARIANTS:
        mine = [r for r in runs if r["variant"] == label and r["status"] == "ok"]
        if not mine:
            continue
        acc = [r["top1"] for r in mine]
        rows.append({
            "variant": label, "n": len(acc), "top1_mean": statistics.mean(acc),
            "top1_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "macs_reduction": statistics.mean(r["macs_reduction"] for r in mine),
            "events": statistics.mean(r["events"] for r in mine),
            "vs_defaults": None if label == BASE else paired_comparison(
                {str(r["seed"]): r["top1"] for r in mine}, base),
        })  # fmt: skip
    return rows


def write(out: Path, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = data["settings"].get("name", "chex_ablation")
    tmp = out / f"{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, out / f"{name}.json")
    s, mc = data["settings"], data["machine"]
    done, planned = len(data["runs"]), data["runs_planned"]
    lines = [
        "# CHEX ablation on a short schedule",
        "",
        *([] if done >= planned else [f"**Partial results: {done} of {planned} runs finished.**", ""]),
        f"ResNet-20 on the embedded digits data, {s['epochs']} epochs, {s['macs']:.0%} of the dense MACs kept "
        f"(every variant within 1%), seeds {s['seeds']}; top-1 of the final epoch, mean ± std over seeds. "
        "Each variant changes one CHEX parameter (docs/strategies.md). *vs defaults*: the paired (same-seed) "
        "difference to `chex (defaults)` with its 95% t-interval and verdict. CHEX's defaults here rank pruned "
        "channels at gamma = 0 and " + COUPLED_TEXT[s.get("chex_coupled", "mean")] + ".",
        "",
        "| variant | top-1 % | std | MACs reduction | events | vs defaults (points) | verdict |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    verdicts = {"better": "ahead of the defaults", "worse": "behind the defaults", "single seed": "one seed"}
    for r in data["summary"]:
        c = r.get("vs_defaults")
        vs = "" if c is None else describe(c)
        verdict = "" if c is None else verdicts.get(c["verdict"], "no clear difference")
        lines.append(f"| {r['variant']} | {r['top1_mean']:.2f} | {r['top1_std']:.2f} | "
                     f"{r['macs_reduction']:.1%} | {r['events']:.0f} | {vs} | {verdict} |")  # fmt: skip
    lines += ["", RULE]
    lines += ["", f"Machine: {mc['cpu']}, {mc['cores']} cores ({mc['torch_threads']} torch thread(s)); torch "
              f"{mc['torch']}, prunekit {mc['prunekit']}. Total {data['total_s']:.0f} s.", "",
              *command_block(data["command"])]  # fmt: skip
    (out / f"{name}.md").write_text("\n".join(lines))


BASE = "chex (defaults)"
COUPLED_TEXT = {
    "mean": "rank residual streams by the mean |gamma| of their BN layers (`coupled: mean`)",
    "max": "rank residual streams by the max |gamma| of their BN layers (`coupled: max`)",
    "fixed": "hold residual streams at the budget's uniform width (`coupled: fixed`)",
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20; --quick: 2)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; --quick: 1)")
    ap.add_argument("--macs", type=float, default=0.5, help="fraction of the dense MACs to keep (default 0.5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument(
        "--variants", nargs="+", default=None, metavar="LABEL",
        help=f"run only these variants (and {BASE!r}, the base of every comparison); default: all",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    ap.add_argument("--name", default="chex_ablation", help="output file names: NAME.md and NAME.json")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs of an earlier NAME.json")
    args = ap.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 20)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    labels = [v[0] for v in VARIANTS]
    chosen = labels if args.variants is None else [BASE, *[v for v in args.variants if v != BASE]]
    unknown = [v for v in chosen if v not in labels]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {labels}")
    variants = [v for v in VARIANTS if v[0] in chosen]
    out = Path(args.out)
    data: dict[str, Any] = {
        "command": command_line("chex_ablation.py", argv), "machine": machine_info(args.threads),
        "settings": {"epochs": args.epochs, "seeds": seeds, "macs": args.macs, "dataset": "digits",
                     "model": "resnet20", "quick": args.quick, "variants": chosen, "name": args.name,
                     "chex_coupled": pk.get_strategy("chex").coupled},
        "runs": [], "runs_planned": len(seeds) * len(variants),
    }  # fmt: skip
    earlier = 0.0
    if args.resume and (out / f"{args.name}.json").exists():
        old = json.loads((out / f"{args.name}.json").read_text())
        same = ("epochs", "macs", "dataset", "model", "quick", "chex_coupled")
        legacy = {"chex_coupled": "mean"}  # files from before the setting was recorded
        differ = [k for k in same if old["settings"].get(k, legacy.get(k)) != data["settings"][k]]
        if differ:
            sys.exit(f"--resume: {args.name}.json was made with other settings ({', '.join(differ)}); use a new --name")
        data["runs"] = [r for r in old["runs"] if r["status"] == "ok" and r["variant"] in chosen and r["seed"] in seeds]
        earlier = float(old.get("total_s", 0.0))
        print(f"--resume: {len(data['runs'])} finished run(s) kept", flush=True)
    done = {(r["variant"], r["seed"]) for r in data["runs"]}
    t0 = time.perf_counter() - earlier
    for seed in seeds:
        for label, strategy, params in variants:
            if (label, seed) in done:
                continue
            r = one_run(label, strategy, params, seed, args, out)
            print(f"{label:26s} seed {seed}  top1 {r['top1']:.2f}  MACs -{r['macs_reduction']:.1%}  "
                  f"events {r['events']}  [{r['wall_s']:.0f}s]", flush=True)  # fmt: skip
            data["runs"].append(r)
            data["summary"] = summarize(data["runs"])
            data["total_s"] = time.perf_counter() - t0
            write(out, data)
    data["summary"] = summarize(data["runs"])
    data["total_s"] = time.perf_counter() - t0
    write(out, data)
    return data


if __name__ == "__main__":
    main()
