"""Zoo coverage: the channel graph on every torchvision classification model.

    .venv/bin/python benchmarks/zoo_coverage.py               # the whole zoo (tens of minutes on 2 CPU cores)
    .venv/bin/python benchmarks/zoo_coverage.py --quick       # 3 models (smoke test)
    .venv/bin/python benchmarks/zoo_coverage.py --models resnet18 googlenet --out /tmp/zoo

Per model: prunable groups, frozen sets, prunable channels, the equivalence error of slim vs masked at
50% random masks (on a copy with random BN statistics and affine parameters, biases and layer scales:
``prunekit.testing.check_equivalence``), how much those masks change the output (a check whose masks barely
move the output proves nothing: it must be at least 100x the 1e-4 tolerance), MACs (conv/linear, per sample)
dense -> pruned, whether Torch-Pruning's DependencyGraph
builds on it, and whether its partition of conv/linear output channels equals ours
(benchmarks/tp_compare.py). Writes ``zoo_coverage.md`` and ``zoo_coverage.json`` to ``--out``
(default docs/results/); the JSON is rewritten after every model, so a long run can be watched.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_common import command_line  # noqa: E402
from tp_compare import classifier_of, compare_partitions, ours_partition, tp_partition  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit.testing import check_equivalence  # noqa: E402

# over ~1.5 GB of float32 weights: skipped on a CPU machine (same list as tests/test_graph_zoo.py)
TOO_BIG = {"vit_h_14": "2.5 GB of weights", "regnet_y_128gf": "2.6 GB of weights"}
TOL = 1e-4  # slimmed vs masked, relative (same as tests/test_graph_zoo.py)
MIN_CHANGE = 100 * TOL  # the masks must change the output by at least this much for the check to count
TRANSFORMERS = ("vit_", "swin_", "maxvit_")
QUICK = ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5"]


def input_size(name: str) -> int:
    if name.startswith(TRANSFORMERS):
        return 224  # fixed image size / window partitions
    return 160 if name.startswith("inception") else 64


def make_model(name: str) -> nn.Module:
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # torchvision zero-inits some heads: give the output something to depend on
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.05)
    return model


TP_TIMEOUT_S = 600
TP_MEMORY_GB = 8  # Torch-Pruning's build on maxvit_t grew past 19 GB here and never finished


def _tp_child(q, model, x, ignored) -> None:
    try:
        q.put(("ok", tp_partition(model, x, ignored)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which records it per model
        q.put(("error", f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"))


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def tp_partition_guarded(model: nn.Module, x: torch.Tensor, ignored: list[nn.Module]):
    """``tp_partition`` in a child process with a time and memory limit, so one model on which Torch-Pruning
    runs away cannot stop the coverage run (or the machine)."""
    ctx = mp.get_context("spawn")  # fork would deadlock: the parent has used OpenMP threads
    q = ctx.Queue()
    proc = ctx.Process(target=_tp_child, args=(q, model, x, ignored), daemon=True)
    proc.start()
    deadline = time.monotonic() + TP_TIMEOUT_S
    try:
        while True:
            try:
                kind, value = q.get(timeout=1.0)
                break
            except queue.Empty:
                if not proc.is_alive() and q.empty():
                    kind, value = "error", f"died (exit code {proc.exitcode}; memory limit {TP_MEMORY_GB} GB)"
                    break
                if _rss_gb(proc.pid) > TP_MEMORY_GB:
                    kind, value = "error", f"grew past {TP_MEMORY_GB} GB of memory (stopped)"
                    break
                if time.monotonic() > deadline:
                    kind, value = "error", f"did not finish within {TP_TIMEOUT_S} s"
                    break
    finally:
        proc.kill()
        proc.join()
    if kind != "ok":
        raise RuntimeError(value)
    return value


def cover(name: str) -> dict:
    model = make_model(name)
    s = input_size(name)
    x = torch.randn(2, 3, s, s)
    row: dict = {"model": name, "input": s, "kind": "transformer" if name.startswith(TRANSFORMERS) else "cnn"}
    t = time.perf_counter()
    g = pk.build_graph(model, x)
    row["build_s"] = time.perf_counter() - t
    eq = check_equivalence(model, x, ratio=0.5, seed=1, graph=g)
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    prunable_convs = {m.module for grp in g.groups for m in grp.members if m.module in convs and m.role == "out"}
    row.update(
        groups=len(g.groups), frozen=len(g.frozen), channels=g.total_channels,
        frozen_channels=sum(f.size for f in g.frozen), convs=len(convs), prunable_convs=len(prunable_convs),
        rel_error=eq.rel_error, changed=eq.changed, shape_ok=eq.shape_ok,
        macs_dense=eq.macs_dense, macs_pruned=eq.macs_pruned,
        # ATen-level count (torch.utils.flop_counter) of the dense and slimmed models: equal to the graph's
        # conv/linear MACs for a CNN; transformers add the attention's activation products
        macs_counted_dense=pk.count_macs(model, x[:1]), macs_counted_pruned=pk.count_macs(eq.slimmed, x[:1]),
    )  # fmt: skip
    # Torch-Pruning on the same model and a batch-1 input
    _, cls = classifier_of(model)
    try:
        theirs = tp_partition_guarded(model, x[:1], [cls])
        row["tp_builds"] = True
        cmp = compare_partitions(name, ours_partition(g), theirs)
        row["tp_identical"] = cmp.identical
        row["tp_diff"] = "" if cmp.identical else cmp.summary().split("\n", 1)[-1].strip()
    except Exception as e:
        row["tp_builds"] = False
        row["tp_identical"] = None
        row["tp_diff"] = str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {str(e)[:120]}"
    return row


def passes(r: dict) -> bool:
    return r["rel_error"] <= TOL and r["changed"] >= MIN_CHANGE and r["shape_ok"] and r["macs_pruned"] < r["macs_dense"]


def write(out: Path, rows: list[dict], skipped: dict, command: str, done: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "command": command, "complete": done}
    (out / "zoo_coverage.json").write_text(json.dumps({**meta, "skipped": skipped, "results": rows}, indent=1))
    ok = [r for r in rows if "error" not in r]
    passed = sum(passes(r) for r in ok)
    tp_built = sum(bool(r.get("tp_builds")) for r in ok)
    same = sum(bool(r.get("tp_identical")) for r in ok)
    lines = [
        "# Zoo coverage: the channel graph on every torchvision classification model",
        "",
        "Random keep masks at 50% per group (seed 1), on a copy of the model whose BN statistics and affine "
        "parameters, biases and layer scales are random (`prunekit.testing.randomize_parameters`); "
        "*error* = max |slim(x) - masked(x)| / max |masked(x)| (float32, eval mode, batch 2); "
        f"*change* = max |masked(x) - dense(x)| / max |dense(x)|, how much the masks move the output (the check "
        f"counts only when it is >= {MIN_CHANGE:g}, 100x the {TOL:g} tolerance); "
        "MACs are conv/linear MACs per sample from `g.macs`. "
        "*TP* = whether Torch-Pruning's `DependencyGraph` builds; *same as TP* = its partition of conv/linear "
        "output channels equals ours (see docs/graph.md for the explained differences).",
        "",
        f"{len(rows)} models run, {passed} pass (error <= {TOL:g}, change >= {MIN_CHANGE:g}, shape unchanged, "
        f"MACs drop); "
        f"Torch-Pruning builds on {tp_built}, identical partition on {same}.",
        "",
        "| model | input | groups | frozen | prunable ch | convs prunable | error | change | MACs dense -> 50% "
        "| build s | TP | same as TP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['input']} | FAILED: {r['error']} | | | | | | | | | |")
            continue
        tp = "yes" if r["tp_builds"] else "fails"
        same_tp = "" if r["tp_identical"] is None else ("yes" if r["tp_identical"] else "differs")
        lines.append(
            f"| {r['model']} | {r['input']} | {r['groups']} | {r['frozen']} | {r['channels']} | "
            f"{r['prunable_convs']}/{r['convs']} | {r['rel_error']:.1e} | {r['changed']:.2f} | "
            f"{r['macs_dense'] / 1e6:.1f}M -> {r['macs_pruned'] / 1e6:.1f}M | {r['build_s']:.2f} | {tp} | {same_tp} |"
        )
    if skipped:
        lines += ["", "Skipped (too big for a CPU machine): "
                  + ", ".join(f"{k} ({v})" for k, v in sorted(skipped.items())) + "."]  # fmt: skip
    fails = [r for r in ok if not r["tp_builds"]]
    if fails:
        lines += ["", "Torch-Pruning failures:", ""]
        lines += [f"- {r['model']}: {r['tp_diff']}" for r in fails]
    diffs = [r for r in ok if r["tp_builds"] and not r["tp_identical"]]
    if diffs:
        lines += ["", "Partition differences with Torch-Pruning (explained in docs/graph.md):", ""]
        lines += [f"- {r['model']}: {r['tp_diff'].splitlines()[0]}" for r in diffs]
    lines += ["", f"torch {meta['torch']}, torchvision {meta['torchvision']}. Command:", "", "```", command, "```", ""]
    if not done:
        lines.insert(2, "**Partial results: the run has not finished.**\n")
    (out / "zoo_coverage.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=None, help="model names (default: the whole zoo / list)")
    ap.add_argument("--quick", action="store_true", help=f"only {QUICK} (timm: a few models)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    ap.add_argument("--suite", choices=("torchvision", "timm"), default="torchvision",
                    help="torchvision's classification models, or issue 11's timm development list "
                    "(benchmarks/timm_coverage.py)")  # fmt: skip
    ap.add_argument("--resume", action="store_true", help="skip the models already in the JSON (a partial run)")
    args = ap.parse_args(argv)
    if args.suite == "timm":
        import timm_coverage

        names = args.models or (timm_coverage.QUICK if args.quick else timm_coverage.DEV_LIST + timm_coverage.BEYOND)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timm_coverage.run(names, Path(args.out), command_line("zoo_coverage.py", argv), args.resume)
    names = args.models or (QUICK if args.quick else sorted(torchvision.models.list_models(module=torchvision.models)))
    command = command_line("zoo_coverage.py", argv)
    skipped = {n: TOO_BIG[n] for n in names if n in TOO_BIG}
    rows: list[dict] = []
    out = Path(args.out)
    if args.resume and (out / "zoo_coverage.json").exists():
        rows = [r for r in json.loads((out / "zoo_coverage.json").read_text())["results"] if r["model"] in names]
        print(f"--resume: {len(rows)} model(s) kept", flush=True)
    seen = {r["model"] for r in rows}
    for name in names:
        if name in skipped or name in seen:
            continue
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row = cover(name)
        except Exception as e:  # reported, never hidden
            traceback.print_exc()
            row = {"model": name, "input": input_size(name), "error": f"{type(e).__name__}: {str(e)[:200]}"}
        rows.append(row)
        status = row.get("error") or (
            f"groups={row['groups']} frozen={row['frozen']} err={row['rel_error']:.1e} change={row['changed']:.2f} "
            f"TP={'ok' if row['tp_builds'] else 'fails'}{'' if row['tp_identical'] is not False else ' (differs)'}"
        )
        print(f"{name:24s} {status} [{time.perf_counter() - t:.0f}s]", flush=True)
        write(out, rows, skipped, command, done=False)
    write(out, rows, skipped, command, done=True)
    return rows


if __name__ == "__main__":
    main()
