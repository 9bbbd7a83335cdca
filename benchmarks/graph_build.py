"""Graph build time: ``pk.build_graph`` against Torch-Pruning's ``DependencyGraph().build_dependency``.

    .venv/bin/python benchmarks/graph_build.py                 # 6 models at 224x224, median of 5 runs
    .venv/bin/python benchmarks/graph_build.py --quick         # 2 models at 64x64, 2 runs (smoke test)
    .venv/bin/python benchmarks/graph_build.py --runs 9 --models resnet50 densenet121 --out /tmp/res
    .venv/bin/python benchmarks/graph_build.py --runs 15 --threads 1 default   # the published pages

Both builders run in the same process on the same model object and the same input (batch 1), one warm-up
run each, then interleaved (ours, TP, ours, TP, ...) so background load hits both alike. ``--threads``: the
torch intra-op thread counts to measure at, each in turn (``default``: what torch uses on this machine).
Thread count matters for the comparison: Torch-Pruning's build runs a real forward pass, which uses every
thread, while ours traces on the meta device; one thread alone would favour ours. Writes
``graph_build.md`` (table) and ``graph_build.json`` to ``--out`` (default docs/results/; ``--name`` changes
the file names, e.g. ``--size 512 --name graph_build_512``).
Target: ours at most half of Torch-Pruning's time (ratio = ours / TP <= 0.5).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import command_block, command_line, machine_info  # noqa: E402

import prunekit as pk  # noqa: E402

MODELS = ["resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf"]
QUICK_MODELS = ["resnet18", "mobilenet_v2"]


def build_ours(model, x):
    return pk.build_graph(model, x)


def build_tp(model, x):
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)


def timed(fn, *args) -> float:
    # Both builders leave large cyclic garbage behind; without a collection first, whichever run happens to
    # trigger the collector pays for the previous ones (seen as 0.05 s vs 3 s for the same Torch-Pruning build).
    gc.collect()
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def bench(name: str, size: int, runs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timed(build_ours, model, x)  # warm-up (imports, fx/fake-tensor caches)
        timed(build_tp, model, x)
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(timed(build_ours, model, x))
            theirs.append(timed(build_tp, model, x))
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {"model": name, "input": [1, 3, size, size], "threads": threads, "ours_s": ours, "tp_s": theirs,
            "ours_median_s": mo, "tp_median_s": mt, "ratio": mo / mt}  # fmt: skip


def write(out: Path, rows: list[dict], info: dict, command: str, name: str = "graph_build") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": info, "command": command, "results": rows}, indent=1))
    lines = [
        "# Graph build time: prunekit vs Torch-Pruning",
        "",
        "`pk.build_graph(model, x)` against `torch_pruning.DependencyGraph().build_dependency(model, x)`: same",
        "process, same model object and input, one warm-up each, then interleaved runs, each after `gc.collect()`;",
        "median seconds.",
        "Ratio = ours / Torch-Pruning (target: <= 0.5). *Threads*: torch intra-op threads for both builders;",
        "Torch-Pruning's build is a real forward pass and can use them, ours traces on the meta device.",
        "",
        "| model | input | threads | ours median (s) | TP median (s) | ratio | runs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = "x".join(map(str, r["input"][2:]))
        lines.append(
            f"| {r['model']} | {size} | {r.get('threads', info['torch_threads'])} | {r['ours_median_s']:.3f} | "
            f"{r['tp_median_s']:.3f} | {r['ratio']:.2f} | {len(r['ours_s'])} |"
        )
    by_threads: dict = {}
    for r in rows:
        by_threads.setdefault(r.get("threads", info["torch_threads"]), []).append(r["ratio"])
    lines.append("")
    for n, ratios in by_threads.items():
        geo = statistics.geometric_mean(ratios)
        lines.append(f"Geometric mean ratio at {n} thread{'s' if n != 1 else ''}: **{geo:.2f}**.")
    lines += [
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (torch's default: {info['torch_threads']} threads), "
        f"{info['platform']}, Python {info['python']}; torch {info['torch']}, torchvision {info['torchvision']}, "
        f"torch-pruning {info['torch_pruning']}; 1-minute load average at the start: {info['load_1min_at_start']}. "
        "Timings on a shared machine are noisy; the ratio is the figure to read, since both builders see the same "
        "load. With more threads than idle cores, OpenMP threads wait on each other and a forward pass (Torch-"
        "Pruning's build) slows down many times over: measure the default-threads rows on an otherwise idle machine.",
        "",
        *command_block(command),
    ]
    (out / f"{name}.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=None, help=f"torchvision model names (default: {MODELS})")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per builder (default 5; --quick: 2)")
    ap.add_argument("--size", type=int, default=None, help="input height/width (default 224; --quick: 64)")
    ap.add_argument("--quick", action="store_true", help="2 small models at 64x64, 2 runs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    ap.add_argument("--name", default="graph_build", help="output file names: NAME.md and NAME.json")
    ap.add_argument(
        "--threads", nargs="+", default=["default"],
        help="torch threads to measure at, in turn: numbers and/or 'default' (torch's default here)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    default_threads = torch.get_num_threads()
    try:
        threads = [default_threads if t == "default" else int(t) for t in args.threads]
    except ValueError:
        ap.error(f"--threads takes numbers and 'default', got {args.threads}")
    if any(t < 1 for t in threads):
        ap.error("--threads: at least 1")
    models = args.models or (QUICK_MODELS if args.quick else MODELS)
    runs = args.runs or (2 if args.quick else 5)
    size = args.size or (64 if args.quick else 224)
    command = command_line("graph_build.py", argv)
    info = machine_info(default_threads)
    rows = []
    for n in threads:
        for name in models:
            r = bench(name, size, runs, n)
            print(f"{name:18s} {n} thread(s): ours {r['ours_median_s']:.3f}s  TP {r['tp_median_s']:.3f}s  "
                  f"ratio {r['ratio']:.2f}", flush=True)  # fmt: skip
            rows.append(r)
    torch.set_num_threads(default_threads)
    write(Path(args.out), rows, info, command.strip(), args.name)
    return rows


if __name__ == "__main__":
    main()
