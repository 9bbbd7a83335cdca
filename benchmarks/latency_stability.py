"""How much the measured speedup of one slimmed model moves between repeated measurements: the timing prunekit
used before issue 12 against the one it uses now (``prunekit.latency``).

    .venv/bin/python benchmarks/latency_stability.py                 # ResNet-20 at 50% channels, batch 1 and 32
    .venv/bin/python benchmarks/latency_stability.py --quick --out /tmp/res

The same dense/slimmed pair (CIFAR ResNet-20 on 3x32x32; the slimmed model keeps the first half of every
channel group) is measured ``--repeats`` times with each method, the two methods alternating, on ``--threads``
torch threads. It stands for "three identical architectures in one compare": each run of a compare measures
its own pair once, so the spread over repeats is the spread of the speedup column.

- before: 5 warm-up rounds, 20 timed rounds (dense and slimmed alternating), one forward per sample, the
  speedup as the ratio of the two medians;
- wall clock: the same warm-up, then rounds until at least 20 rounds and ``--min-seconds`` have passed, a
  sample lasting at least 1 ms (several forwards for tiny models), garbage collection off, and the speedup as
  the median of the per-round ratios (each round's dense and slimmed times are paired): what prunekit does
  with several torch threads or on a GPU;
- CPU time: the same, read from the thread's CPU time (``time.thread_time``), which leaves out the time the
  process waits for a core: what prunekit does on one CPU thread (``prunekit.latency.cpu_clock``; small models
  train on one thread).

Writes ``latency_stability.md`` and ``.json`` to ``--out`` (default docs/results/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import command_block, command_line, machine_info  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit.env import Env  # noqa: E402
from prunekit.latency import time_models  # noqa: E402
from prunekit.models import build_model  # noqa: E402

METHODS = ("before", "wall clock", "CPU time")


def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(slimmed, dense) CIFAR ResNet-20: the slimmed one keeps the first half of every channel group."""
    torch.manual_seed(0)
    dense = build_model("resnet20", 10, 3, 32).eval()
    graph = pk.build_graph(dense, torch.zeros(1, 3, 32, 32))
    keep = {g.id: torch.arange(g.size) < max(1, g.size // 2) for g in graph.groups}
    return pk.slim(dense, graph, keep).eval(), dense


def measure(method: str, models: list[torch.nn.Module], x: torch.Tensor, min_seconds: float) -> dict:
    env = Env(torch.device("cpu"))
    t0 = time.perf_counter()
    if method == "before":
        stats = time_models(models, x, env, runs=20, warmup=5, min_seconds=0.0, sample_ms=0.0)
        speedup = stats.ms[1] / stats.ms[0]
    elif method == "wall clock":
        stats = time_models(models, x, env, runs=20, warmup=5, min_seconds=min_seconds)
        speedup = stats.ratio(1, 0)
    else:  # "CPU time": the same, timed with this thread's CPU time (prunekit's choice on one CPU thread)
        stats = time_models(models, x, env, runs=20, warmup=5, min_seconds=min_seconds, clock=time.thread_time)
        speedup = stats.ratio(1, 0)
    return {
        "speedup": speedup,
        "ms": stats.ms,
        "rounds": stats.rounds,
        "calls": stats.calls,
        "seconds": time.perf_counter() - t0,
    }


def summary(rows: list[dict]) -> dict:
    s = [r["speedup"] for r in rows]
    med = statistics.median(s)
    return {
        "min": min(s),
        "median": med,
        "within_10pct": sum(abs(v / med - 1) <= 0.1 for v in s),  # repeats within 10% of the median
        "max": max(s),
        "spread": max(s) / min(s),
        "seconds_each": statistics.median(r["seconds"] for r in rows),
        "rounds_each": statistics.median(r["rounds"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=1.0, help="the new method's minimum timing (the harness's)")
    ap.add_argument("--quick", action="store_true", help="3 repeats, batch 1, 0.2 s")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.batches, args.min_seconds = 3, [1], 0.2
    torch.set_num_threads(args.threads)
    small, dense = pair()
    results = []
    for batch in args.batches:
        x = torch.zeros(batch, 3, 32, 32)
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for i in range(args.repeats):
            for method in METHODS if i % 2 == 0 else METHODS[::-1]:
                runs[method].append(measure(method, [small, dense], x, args.min_seconds))
        results.append({"batch": batch, "runs": runs, "summary": {m: summary(r) for m, r in runs.items()}})
        print(f"batch {batch}: " + "; ".join(f"{m} {results[-1]['summary'][m]}" for m in runs), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = command_line("latency_stability.py")
    data = {
        "machine": machine_info(args.threads),
        "command": command,
        "settings": {"repeats": args.repeats, "batches": args.batches, "min_seconds": args.min_seconds},
        "results": results,
    }
    (out / "latency_stability.json").write_text(json.dumps(data, indent=2) + "\n")
    m = data["machine"]
    lines = [
        "# Latency: how stable is the measured speedup?",
        "",
        f"CIFAR ResNet-20 (3x32x32) against the same network with half of every channel group, measured "
        f"{args.repeats} times per method and batch size on {m['cpu']} ({m['cores']} cores, {args.threads} torch "
        f"thread(s), load {m['load_1min_at_start']} at the start; torch {m['torch']}). The methods alternate, "
        "so they see the same machine. *before*: 20 rounds after 5 warm-up, one forward per sample, the ratio "
        "of the two medians (prunekit before issue 12). *wall clock* and *CPU time*: at least 20 rounds and "
        f"{args.min_seconds:g} s, samples of at least 1 ms, the median of the paired per-round ratios, read from the "
        "wall clock or from the thread's CPU time; `prunekit run` and `compare` use *CPU time* on one CPU thread "
        "and *wall clock* otherwise (`prunekit.latency`).",
        "",
        "| batch | method | speedup min | median | max | max/min | within 10% of the median | rounds | s each |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for method, s in r["summary"].items():
            lines.append(
                f"| {r['batch']} | {method} | {s['min']:.2f}x | {s['median']:.2f}x | {s['max']:.2f}x | "
                f"{s['spread']:.2f} | {s['within_10pct']}/{len(r['runs'][method])} | {s['rounds_each']:.0f} | "
                f"{s['seconds_each']:.2f} |"
            )
    lines += [
        "",
        'max/min is the spread of the speedup column one would see over that many identical pairs; "within 10%" '
        "counts the repeats that a reader would call the same speedup. By the wall clock, a process "
        "that waits for a core on a busy machine (here other processes on both cores) counts the wait, which no "
        "number of rounds removes when it lasts longer than a measurement; the thread's CPU time leaves it out. "
        "The figures depend on the machine and on "
        "what else runs on it; the JSON has every measurement.",
        "",
        *command_block(command),
    ]
    (out / "latency_stability.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
