"""CHEX ablation: which of its parts help or hurt on a short CPU schedule, against magnitude and random.

    .venv/bin/python benchmarks/chex_ablation.py                 # digits, ResNet-20, 50% MACs, 3 seeds, 20 epochs
    .venv/bin/python benchmarks/chex_ablation.py --epochs 40 --seeds 5
    .venv/bin/python benchmarks/chex_ablation.py --quick         # 1 seed, 2 epochs (smoke test)

Every variant trains the same model from the same initial weights and data order per seed, at the same MACs
budget (kept within 1%), on the embedded digits data, so the whole table runs in minutes on 2 CPU cores.
Variants switch off one part of CHEX at a time (docs/strategies.md has the parameters):
``explore=false`` (prune once to S before training: no exploration), ``regrow_by=none`` / ``random``,
``allocation=uniform`` (no BN-scale re-allocation), ``delta_T`` smaller/larger, ``regrow_init=zero``,
``pruned_gamma=zero`` (pruned channels ranked as gamma = 0: widths can only shrink).
Writes ``chex_ablation.md`` and ``chex_ablation.json`` to ``--out`` (default docs/results/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench_common import command_block, command_line, machine_info

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
    ("chex pruned_gamma=zero", "chex", {"pruned_gamma": "zero"}),
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
        })  # fmt: skip
    return rows


def write(out: Path, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chex_ablation.json").write_text(json.dumps(data, indent=1))
    s, mc = data["settings"], data["machine"]
    lines = [
        "# CHEX ablation on a short schedule",
        "",
        f"ResNet-20 on the embedded digits data, {s['epochs']} epochs, {s['macs']:.0%} of the dense MACs kept "
        f"(every variant within 1%), seeds {s['seeds']}; top-1 of the final epoch, mean ± std over seeds. "
        "Each variant changes one CHEX parameter (docs/strategies.md).",
        "",
        "| variant | top-1 % | std | MACs reduction | events |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in data["summary"]:
        lines.append(f"| {r['variant']} | {r['top1_mean']:.2f} | {r['top1_std']:.2f} | "
                     f"{r['macs_reduction']:.1%} | {r['events']:.0f} |")  # fmt: skip
    summ = data["summary"]
    if len(summ) > 1:
        means = [r["top1_mean"] for r in summ]
        spread = max(means) - min(means)
        typical = statistics.median(r["top1_std"] for r in summ)
        best = max(summ, key=lambda r: r["top1_mean"])["variant"]
        worst = min(summ, key=lambda r: r["top1_mean"])["variant"]
        lines += ["", f"Spread of the means across variants: {spread:.2f} points (best: {best}; worst: {worst}); "
                  f"median standard deviation over seeds: {typical:.2f} points. Differences smaller than about "
                  "twice that are not evidence of anything on this data."]  # fmt: skip
    lines += ["", f"Machine: {mc['cpu']}, {mc['cores']} cores ({mc['torch_threads']} torch thread(s)); torch "
              f"{mc['torch']}, prunekit {mc['prunekit']}. Total {data['total_s']:.0f} s.", "",
              *command_block(data["command"])]  # fmt: skip
    (out / "chex_ablation.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20; --quick: 2)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; --quick: 1)")
    ap.add_argument("--macs", type=float, default=0.5, help="fraction of the dense MACs to keep (default 0.5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    args = ap.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 20)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    out = Path(args.out)
    data: dict[str, Any] = {
        "command": command_line("chex_ablation.py", argv), "machine": machine_info(args.threads),
        "settings": {"epochs": args.epochs, "seeds": seeds, "macs": args.macs, "dataset": "digits",
                     "model": "resnet20", "quick": args.quick},
        "runs": [],
    }  # fmt: skip
    t0 = time.perf_counter()
    for seed in seeds:
        for label, strategy, params in VARIANTS:
            r = one_run(label, strategy, params, seed, args, out)
            print(f"{label:26s} seed {seed}  top1 {r['top1']:.2f}  MACs -{r['macs_reduction']:.1%}  "
                  f"events {r['events']}  [{r['wall_s']:.0f}s]", flush=True)  # fmt: skip
            data["runs"].append(r)
            data["summary"] = summarize(data["runs"])
            data["total_s"] = time.perf_counter() - t0
            write(out, data)
    return data


if __name__ == "__main__":
    main()
