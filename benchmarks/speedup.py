"""Real speedup: CPU latency of slimmed models against their dense originals at 50% of the MACs.

    .venv/bin/python benchmarks/speedup.py                  # ResNet-50, MobileNetV2 (224x224), ResNet-56 (32x32)
    .venv/bin/python benchmarks/speedup.py --quick          # ResNet-18 (64x64), ResNet-20 (32x32); batch 1, 4; 2 runs
    .venv/bin/python benchmarks/speedup.py --threads 4 --runs 9 --batches 1 64 --models resnet50 --out /tmp/res

Per model and ``round_to`` (1 and 8): the built-in ``magnitude`` strategy (L1 norm of the filters, uniform
allocation) prunes the model through the library's budget machinery, a ``PruningController`` with
``Budget(macs=0.5, round_to=r)``, which bisects over the global sparsity until the strategy's allocation keeps
half of the dense conv/linear MACs (within 1%). The masked model is slimmed with ``pk.slim`` and checked
against the masked output (relative error). MACs are counted with ``pk.count_macs`` on the dense and the
slimmed model; the ideal speedup is dense MACs / slimmed MACs.

Latency: eval mode, ``torch.inference_mode``, a fixed thread count (``--threads``), warm-up calls, then
at least ``--runs`` timed runs interleaving the dense model and every slimmed variant in the same process
(the order rotates each run; cheap cases get more runs, up to ``--budget-s`` seconds), median per model.
Small forwards are repeated inside a run (``reps``) so that one run lasts at least ``--min-run-ms``; times
are per forward. Writes ``speedup.md`` and ``speedup.json`` to
``--out`` (default docs/results/). Target: the slimmed ResNet-50 at batch 32 reaches >= 0.85 of its ideal
(MACs) speedup.

ONNX Runtime (``--onnx-models``, default ResNet-50; ``--quick``: ResNet-20): the dense model and each slimmed
variant are exported with ``pk.export_onnx`` (checked against PyTorch with onnxruntime: max abs difference in
the table) and timed in onnxruntime's CPU provider (``--threads`` intra-op threads) the same way, interleaved
in one process, medians. Needs ``pip install 'prunekit[onnx]'``; ``--onnx-models`` with no names skips it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import command_block, command_line, load_avg, machine_info  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit.controller import MACS_TOLERANCE, PruningController  # noqa: E402
from prunekit.models import build_model  # noqa: E402

# name -> input size; CIFAR ResNets come from prunekit.models, the rest from torchvision (1000 classes)
MODELS = {"resnet50": 224, "mobilenet_v2": 224, "resnet56": 32}
QUICK_MODELS = {"resnet18": 64, "resnet20": 32}
CIFAR = {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110"}
MAX_RUNS = 40
TARGET = {"model": "resnet50", "batch": 32, "fraction_of_ideal": 0.85}
ONNX_MODELS, QUICK_ONNX_MODELS = ["resnet50"], ["resnet20"]




def make_model(name: str, size: int) -> nn.Module:
    """Random-init model with randomized BN statistics (so masked vs slimmed compares non-trivial values)."""
    torch.manual_seed(0)
    if name in CIFAR:
        model = build_model(name, num_classes=10, in_channels=3, input_size=size)
    else:
        model = torchvision.models.get_model(name, weights=None)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def prune(model: nn.Module, graph, round_to: int, macs: float) -> tuple[nn.Module, nn.Module, dict]:
    """(masked copy, slimmed model, controller event) at ``Budget(macs=macs, round_to=round_to)``."""
    masked = copy.deepcopy(model)
    strategy = pk.get_strategy("magnitude")
    ctrl = PruningController(masked, graph, strategy, pk.Budget(macs=macs, round_to=round_to), 1, 1, seed=0)
    ctrl.start()  # magnitude prunes once at step 0: masks applied to ``masked`` in place
    slimmed = pk.slim(masked, graph, ctrl.keep).eval()
    return masked.eval(), slimmed, ctrl.events[-1]


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def forward_s(model: nn.Module, x: torch.Tensor, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        model(x)
    return (time.perf_counter() - t) / reps


def measure(
    models: dict[str, nn.Module], x: torch.Tensor, runs: int, warmup: int, min_run_s: float, budget_s: float
) -> dict:
    """{key: [seconds per forward, one per run]}: warm-up, then interleaved runs with a rotating order.

    At least ``runs`` runs; when a round (one run of every model) is short, more rounds are added until about
    ``budget_s`` seconds of timing (at most MAX_RUNS), so cheap cases get a more robust median."""
    keys = list(models)
    with torch.inference_mode():
        warm: dict[str, float] = {}
        for _ in range(max(1, warmup)):
            for k in keys:
                warm[k] = forward_s(models[k], x, 1)  # the last warm-up call of each model
        reps = max(1, math.ceil(min_run_s / max(warm[keys[0]], 1e-6)))
        round_s = reps * sum(warm.values())
        n = min(max(runs, int(budget_s / max(round_s, 1e-6))), max(runs, MAX_RUNS))
        times: dict[str, list[float]] = {k: [] for k in keys}
        for i in range(n):
            order = keys[i % len(keys) :] + keys[: i % len(keys)]
            for k in order:
                times[k].append(forward_s(models[k], x, reps))
    return {"reps": reps, "times": times}


def bench(name: str, size: int, args) -> list[dict]:
    t0 = time.perf_counter()
    model = make_model(name, size)
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = pk.build_graph(model, x1)
    macs_dense = pk.count_macs(model, x1)
    variants: dict[int, dict] = {}
    slimmed: dict[str, nn.Module] = {"dense": model}
    for r in args.round_to:
        masked, small, event = prune(model, graph, r, args.macs)
        macs_slim = pk.count_macs(small, x1)
        with torch.inference_mode():
            err = rel_error(small(x1), masked(x1))
        frac = macs_slim / macs_dense
        variants[r] = {
            "macs_slim": macs_slim,
            "macs_fraction": frac,
            "macs_fraction_graph": event["macs_fraction"],
            "macs_ok": abs(frac - args.macs) <= MACS_TOLERANCE * args.macs,
            "sparsity": event["sparsity"],
            "channels_kept": event["kept_total"],
            "channels_total": event["channels_total"],
            "params_dense": pk.count_params(model),
            "params_slim": pk.count_params(small),
            "rel_error": err,
        }
        slimmed[f"r{r}"] = small
        del masked
    prep_s = time.perf_counter() - t0
    if name in args.onnx_models:
        args.onnx_rows += bench_onnx(name, size, slimmed, x1, macs_dense, variants, args)
    rows = []
    for b in args.batches:
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(2))
        m = measure(slimmed, x, args.runs, args.warmup, args.min_run_ms / 1000, args.budget_s)
        dense_ms = statistics.median(m["times"]["dense"]) * 1000
        for r in args.round_to:
            v = variants[r]
            slim_ms = statistics.median(m["times"][f"r{r}"]) * 1000
            speedup = dense_ms / slim_ms
            slim_min = min(m["times"][f"r{r}"]) * 1000
            dense_min = min(m["times"]["dense"]) * 1000
            ideal = macs_dense / v["macs_slim"]
            rows.append({
                "model": name, "input": [b, 3, size, size], "batch": b, "round_to": r,
                "dense_ms": dense_ms, "slim_ms": slim_ms, "speedup": speedup, "ideal_speedup": ideal,
                "fraction_of_ideal": speedup / ideal, "dense_min_ms": dense_min, "slim_min_ms": slim_min,
                "speedup_min": dense_min / slim_min, "macs_dense": macs_dense, **v,
                "reps": m["reps"], "dense_runs_ms": [t * 1000 for t in m["times"]["dense"]],
                "slim_runs_ms": [t * 1000 for t in m["times"][f"r{r}"]], "prepare_s": prep_s,
            })  # fmt: skip
            print(
                f"{name:13s} {size:3d}px round_to {r} batch {b:3d}: dense {dense_ms:9.2f} ms  slim {slim_ms:9.2f} ms"
                f"  speedup {speedup:.2f} / ideal {ideal:.2f} = {speedup / ideal:.2f}  macs {v['macs_fraction']:.4f}"
                f"  err {v['rel_error']:.1e}",
                flush=True,
            )
    return rows


def bench_onnx(name: str, size: int, models: dict[str, nn.Module], x1: torch.Tensor, macs_dense: int,
               variants: dict[int, dict], args) -> list[dict]:  # fmt: skip
    """onnxruntime latency of the dense model and each slimmed variant: exported with pk.export_onnx (checked
    against PyTorch), then timed like the PyTorch models (warm-up, interleaved runs, medians)."""
    from prunekit.onnx_export import onnx_session

    t0 = time.perf_counter()
    runners, diffs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, model in models.items():
            report = pk.export_onnx(model, x1, str(Path(tmp) / f"{key}.onnx"))
            diffs[key] = report.max_abs_diff
            sess = onnx_session(report.path, threads=args.threads)
            runners[key] = lambda x, s=sess: s.run(None, {"input": x.numpy()})
    export_s = time.perf_counter() - t0
    import onnxruntime

    rows = []
    for b in args.batches:
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(2))
        m = measure(runners, x, args.runs, args.warmup, args.min_run_ms / 1000, args.budget_s)
        dense_ms = statistics.median(m["times"]["dense"]) * 1000
        for r in args.round_to:
            slim_ms = statistics.median(m["times"][f"r{r}"]) * 1000
            ideal = macs_dense / variants[r]["macs_slim"]
            rows.append({
                "model": name, "input": [b, 3, size, size], "batch": b, "round_to": r, "runtime": "onnxruntime "
                + onnxruntime.__version__, "dense_ms": dense_ms, "slim_ms": slim_ms, "speedup": dense_ms / slim_ms,
                "ideal_speedup": ideal, "fraction_of_ideal": dense_ms / slim_ms / ideal,
                "macs_fraction": variants[r]["macs_fraction"], "max_abs_diff_dense": diffs["dense"],
                "max_abs_diff_slim": diffs[f"r{r}"], "reps": m["reps"],
                "dense_runs_ms": [t * 1000 for t in m["times"]["dense"]],
                "slim_runs_ms": [t * 1000 for t in m["times"][f"r{r}"]], "export_s": export_s,
            })  # fmt: skip
            print(
                f"{name:13s} onnxruntime round_to {r} batch {b:3d}: dense {dense_ms:9.2f} ms  slim {slim_ms:9.2f} ms"
                f"  speedup {dense_ms / slim_ms:.2f} / ideal {ideal:.2f}  diff {diffs[f'r{r}']:.1e}",
                flush=True,
            )
    return rows


def row_head(r: dict) -> str:
    """The columns both tables start with: model, input, round_to, batch, dense / slimmed ms, speedup, ideal."""
    size = "x".join(map(str, r["input"][2:]))
    return (
        f"| {r['model']} | {size} | {r['round_to']} | {r['batch']} | {r['dense_ms']:.2f} | {r['slim_ms']:.2f} "
        f"| {r['speedup']:.2f} | {r['ideal_speedup']:.2f} | {r['fraction_of_ideal']:.2f} "
    )


def onnx_lines(rows: list[dict], settings: dict) -> list[str]:
    """The page's ONNX Runtime section."""
    if not rows:
        return []
    lines = [
        "",
        f"## ONNX Runtime ({rows[0]['runtime']})",
        "",
        "The same dense model and slimmed variants, exported with `pk.export_onnx` (torch's `torch.export`-based "
        "exporter, dynamic batch) and run in onnxruntime's CPU execution provider with "
        f"{settings['threads']} intra-op threads, timed as above: warm-up, runs interleaving the dense model and "
        "the slimmed variants in one process, median ms per forward pass. *max abs diff* = the largest "
        "|onnxruntime - PyTorch| of the export's check (its example and a batch of 3), dense / slimmed.",
        "",
        "| model | input | round_to | batch | dense ms | slimmed ms | speedup | ideal (MACs) | of ideal "
        "| MACs kept | max abs diff | runs | reps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"{row_head(r)}| {r['macs_fraction']:.4f} | {r['max_abs_diff_dense']:.1e} / {r['max_abs_diff_slim']:.1e} "
            f"| {len(r['slim_runs_ms'])} | {r['reps']} |"
        )
    return lines


def target_status(rows: list[dict]) -> dict:
    hits = [r for r in rows if r["model"] == TARGET["model"] and r["batch"] == TARGET["batch"]]
    out = {**TARGET, "measured": {str(r["round_to"]): r["fraction_of_ideal"] for r in hits}}
    out["met"] = {str(r["round_to"]): r["fraction_of_ideal"] >= TARGET["fraction_of_ideal"] for r in hits} or None
    return out


def write(
    out: Path, rows: list[dict], info: dict, settings: dict, command: str, total_s: float, onnx_rows: list[dict]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    info = {"load_1min_at_end": load_avg(), **info}
    # the load at the end includes our own threads; at the start it does not
    start, end, threads = info["load_1min_at_start"], info["load_1min_at_end"], info["torch_threads"]
    loads = [v for v in (None if start is None else start + threads, end) if v is not None]
    busy = bool(loads) and max(loads) > (info["cores"] or 1) + 1 and threads > 1
    target = target_status(rows)
    data = {"machine": info, "command": command, "settings": settings, "target": target, "total_s": total_s,
            "results": rows, "onnx_results": onnx_rows}  # fmt: skip
    (out / "speedup.json").write_text(json.dumps(data, indent=1))
    lines = [
        "# Real speedup: slimmed vs dense CPU latency at 50% of the MACs",
        "",
        f"Each model is pruned by the built-in `magnitude` strategy (L1 filter norms, uniform allocation) through "
        f"a `PruningController` with `Budget(macs={settings['macs']:g}, round_to=r)` (bisection over the global "
        "sparsity until the strategy's allocation keeps that fraction of the dense MACs), then physically "
        "slimmed with `pk.slim`. *MACs kept* = `pk.count_macs(slimmed) / pk.count_macs(dense)` (target "
        f"{settings['macs']:g} within 1%); *ideal* = dense MACs / slimmed MACs; *of ideal* = speedup / ideal; "
        "*speedup (min)* = the same ratio from the fastest run of each (less sensitive to other load on the "
        "machine); *rel err* = max |slim(x) - masked(x)| / max |masked(x)| (sanity: the slimmed model computes "
        "the masked one).",
        "",
        f"Latency: eval mode, `torch.inference_mode`, {settings['threads']} torch threads, {settings['warmup']} "
        f"warm-up call(s) per model, then at least {settings['runs']} runs (*runs*; more, up to about "
        f"{settings['budget_s']:g} s, for cheap cases) interleaving the dense model and the slimmed "
        "variants in one process (rotating order); median ms per forward pass (*reps* forwards per run for "
        "short ones).",
        "",
        "| model | input | round_to | batch | dense ms | slimmed ms | speedup | ideal (MACs) | of ideal "
        "| speedup (min) | MACs kept | params kept | rel err | runs | reps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"{row_head(r)}| {r['speedup_min']:.2f} "
            f"| {r['macs_fraction']:.4f}{'' if r['macs_ok'] else ' (off)'} "
            f"| {r['params_slim'] / r['params_dense']:.3f} | {r['rel_error']:.1e} | {len(r['slim_runs_ms'])} "
            f"| {r['reps']} |"
        )
    lines.append("")
    want = TARGET["fraction_of_ideal"]
    if target["met"] is None:
        lines.append(f"Target (>= {want} of ideal for {TARGET['model']} at batch {TARGET['batch']}): not measured "
                     "in this run.")  # fmt: skip
    else:
        parts = [
            f"round_to={k}: {v:.2f} ({'met' if target['met'][k] else 'NOT met'})" for k, v in target["measured"].items()
        ]
        verdict = "met" if all(target["met"].values()) else (
            "not met" if not any(target["met"].values()) else "met only in part")  # fmt: skip
        lines.append(
            f"Target: the slimmed {TARGET['model']} at batch {TARGET['batch']} reaches >= {want} of its ideal "
            f"(MACs) speedup. **{verdict.capitalize()}**: " + "; ".join(parts) + "."
        )
    off = [r for r in rows if not r["macs_ok"]]
    if off:
        seen = sorted({(r["model"], r["round_to"], round(r["macs_fraction"], 4)) for r in off})
        lines += ["", "MACs budget missed by more than 1%: " + ", ".join(
            f"{m} round_to={rt} keeps {f:.4f}" for m, rt, f in seen) + "."]  # fmt: skip
    lines += onnx_lines(onnx_rows, settings)
    lines += [
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"{info['platform']}, Python {info['python']}; torch {info['torch']}, torchvision {info['torchvision']}. "
        f"1-min load average at start / end: {info['load_1min_at_start']} / {info['load_1min_at_end']}. The "
        "machine is shared and timings are noisy; dense and slimmed runs are interleaved so both see the same "
        f"load. Total time {total_s:.0f} s.",
    ]
    if busy:
        lines += [
            "",
            "**Warning: the machine was oversubscribed** (1-min load average, counting these threads, above "
            f"{info['cores']} cores + 1) while {info['torch_threads']} torch threads ran: OpenMP barriers then "
            "wait for descheduled threads, which inflates latencies by up to orders of magnitude and makes the "
            "ratios unreliable. Rerun on a quiet machine, or with `--threads 1`.",
        ]
    lines += [
        "",
        *command_block(command),
    ]
    (out / "speedup.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"model[:size] names (default: {' '.join(f'{k}:{v}' for k, v in MODELS.items())})",
    )
    ap.add_argument("--batches", nargs="+", type=int, default=None, help="batch sizes (default 1 32; --quick: 1 4)")
    ap.add_argument(
        "--round-to",
        nargs="+",
        type=int,
        default=[1, 8],
        dest="round_to",
        help="round_to values of the budget (default 1 8)",
    )
    ap.add_argument("--macs", type=float, default=0.5, help="fraction of dense MACs to keep (default 0.5)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument(
        "--runs", type=int, default=None, help="timed runs per model and batch, at least (default 7; --quick: 2)"
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        dest="budget_s",
        help=f"add runs (up to {MAX_RUNS}) while a model/batch took less than this many seconds "
        "(default 15; --quick: 0)",
    )
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls per model (default 2; --quick: 1)")
    ap.add_argument(
        "--min-run-ms",
        type=float,
        default=None,
        dest="min_run_ms",
        help="repeat short forwards within a run up to this many ms (default 100; --quick: 20)",
    )
    ap.add_argument(
        "--onnx-models",
        nargs="*",
        default=None,
        dest="onnx_models",
        help=f"also time these models in onnxruntime (default {' '.join(ONNX_MODELS)}; --quick: "
        f"{' '.join(QUICK_ONNX_MODELS)}; no names: none)",
    )
    ap.add_argument("--quick", action="store_true", help="resnet18 at 64x64 and resnet20, batch 1 and 4, 2 runs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    args = ap.parse_args(argv)  # fmt: skip
    if args.models:
        defaults = {**MODELS, **QUICK_MODELS}
        models = {}
        for spec in args.models:
            name, _, size = spec.partition(":")
            models[name] = int(size) if size else defaults.get(name, 32 if name in CIFAR else 224)
    else:
        models = QUICK_MODELS if args.quick else MODELS
    args.batches = args.batches or ([1, 4] if args.quick else [1, 32])
    args.runs = args.runs or (2 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.budget_s = args.budget_s if args.budget_s is not None else (0.0 if args.quick else 15.0)
    args.min_run_ms = args.min_run_ms if args.min_run_ms is not None else (20.0 if args.quick else 100.0)
    if args.onnx_models is None:
        args.onnx_models = QUICK_ONNX_MODELS if args.quick else ONNX_MODELS
    args.onnx_rows = []
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    command = command_line("speedup.py", argv)
    info = machine_info(torch.get_num_threads())
    settings = {"models": models, "batches": args.batches, "round_to": args.round_to, "macs": args.macs,
                "threads": args.threads, "runs": args.runs, "budget_s": args.budget_s, "warmup": args.warmup,
                "min_run_ms": args.min_run_ms, "strategy": "magnitude", "quick": args.quick,
                "onnx_models": args.onnx_models}  # fmt: skip
    t0 = time.perf_counter()
    rows = []
    for name, size in models.items():
        rows += bench(name, size, args)
    write(Path(args.out), rows, info, settings, command.strip(), time.perf_counter() - t0, args.onnx_rows)
    return rows


if __name__ == "__main__":
    main()
