"""Latency budgets end to end: ``prunekit run --strategy magnitude --latency 0.6`` on digits (ResNet-20) and on a
torchvision ResNet-18 (synthetic data, 224x224, a few steps), each through the real CLI; then the slimmed
model it wrote, timed again in this process against the dense architecture.

    .venv/bin/python benchmarks/latency_budget.py                 # both cases, about 10 minutes on 2 cores
    .venv/bin/python benchmarks/latency_budget.py --quick         # digits only, target 0.8 (smoke test)
    .venv/bin/python benchmarks/latency_budget.py --target 0.5 --out /tmp/res

For each case the page shows the command, the run's own result table (the target and what the slimmed model
achieved, timed by the run at the end at the budget's batch size on this CPU), how the controller resolved
the budget (MACs fraction, probes, timer calls, round_to, seconds), and an independent check: the run's
``model_pruned.pt`` loaded with ``prunekit.load_pruned`` and the dense model built from the same factory,
timed interleaved (``prunekit.latency.time_models``, 40 rounds) at the same batch; the fraction is the median
of the paired per-round ratios. Target: within 10% of the requested fraction. Writes ``latency_budget.md``
and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import command_block, command_line, machine_info, save_page  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit.env import Env  # noqa: E402
from prunekit.latency import cpu_clock, time_models  # noqa: E402
from prunekit.models import build_model  # noqa: E402

WITHIN = 0.10  # the acceptance band, relative to the requested fraction
RECHECKS = 3  # independent timings of the run's slimmed model against the dense one (the median is reported)
COMMON = ["--strategy", "magnitude", "--progress", "plain", "--set", "train.threads=1"]
CASES = {
    # tiny 8x8 inputs: at batch 32 per-layer overhead dominates, so the budget is timed at batch 256
    "digits": ["--dataset", "digits", "--model", "resnet20", "--epochs", "1", "--set", "prune.latency_batch=256"],
    "resnet18": [
        "--dataset", "synthetic", "--image-size", "224", "--model", "resnet18", "--epochs", "1", "--batch-size", "16",
        "--set", "data.train_size=40", "--set", "data.test_fraction=0.2", "--set", "run.latency_batch=4",
    ],  # fmt: skip
}


def run_case(name: str, target: float, out: Path) -> dict[str, Any]:
    args = ["run", *COMMON, *CASES[name], "--latency", f"{target:g}", "--out", str(out), "--name", name]
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="160")
    print(f"[latency_budget] prunekit {' '.join(args)}", flush=True)
    r = subprocess.run([sys.executable, "-m", "prunekit", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name}: prunekit run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    run_dir = out / name
    res = json.loads((run_dir / "result.json").read_text())
    events = json.loads((run_dir / "events.json").read_text())
    timed = [
        {**e["latency"], "seconds": e["latency_seconds"]}
        for e in events
        if "latency" in e and e["latency"].get("step") == e["step"]
    ]
    return {
        "case": name,
        "command": "prunekit " + " ".join(["run", *COMMON, *CASES[name], "--latency", f"{target:g}"]),
        "table": r.stdout.split("run directory:")[0].rstrip(),
        "result": {k: res.get(k) for k in (
            "latency_target", "latency_target_ms", "latency_achieved", "latency_achieved_ms", "latency_budget_batch",
            "round_to", "macs_reduction", "latency_ms", "dense_latency_ms", "speedup", "latency_batch", "top1",
            "device", "latency_method",
        )},  # fmt: skip
        "resolutions": timed,
        "check": recheck(run_dir, res),
    }


def recheck(run_dir: Path, res: dict[str, Any]) -> dict[str, Any]:
    """The run's slimmed model against the dense architecture, timed here at the budget's batch, with the run's
    threads and memory format (config.yaml holds what they resolved to)."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    small = pk.load_pruned(str(run_dir / "model_pruned.pt")).eval()
    spec = dict(torch.load(run_dir / "model_pruned.pt", weights_only=True)["factory_kwargs"])
    dense = build_model(spec.pop("name"), **spec).eval()
    batch = res["latency_budget_batch"]
    x = torch.zeros(batch, spec["in_channels"], spec["input_size"], spec["input_size"])
    torch.set_num_threads(int(cfg["train"]["threads"] or 1))
    env = Env(torch.device("cpu"), channels_last=bool(cfg["train"]["channels_last"]))  # as the run resolved it
    if env.channels_last:
        small, dense = (m.to(memory_format=torch.channels_last) for m in (small, dense))
    clock, clock_name = cpu_clock(env)  # the harness's clock: thread CPU time on one CPU thread
    repeats = []
    for _ in range(RECHECKS):  # spread over time: the machine's speed drifts by several percent over minutes
        st = time_models([small, dense], x, env, runs=40, warmup=5, min_seconds=2.0, clock=clock, clock_name=clock_name)
        repeats.append({"fraction": st.ratio(0, 1), "small_ms": st.ms[0], "dense_ms": st.ms[1], "rounds": st.rounds})
    ratio = statistics.median(r["fraction"] for r in repeats)
    return {
        "fraction": ratio,
        "repeats": repeats,
        "rounds": sum(r["rounds"] for r in repeats),
        "clock": clock_name,
        "within": abs(ratio / res["latency_target"] - 1) <= WITHIN,
    }


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    mc = data["machine"]
    lines = [
        "# Latency budgets: `prunekit run --latency F`",
        "",
        f"`--latency {data['target']:g}` asks for a slimmed model that keeps {data['target']:g} of the dense model's",
        "latency **measured on the run's device** (here this machine's CPU: "
        f"{mc['cpu']}, 1 torch thread, load average {mc['load_1min_at_start']} at the start, shared with other work).",
        "The controller resolves it at the strategy's pruning event by timing slimmed candidates beside the dense",
        "model (MACs bisection, then secant steps on the measured ratio; docs/cli.md, *Latency budgets*).",
        "`achieved` is the run's own measurement at the end (at the budget's batch size; the fraction is the",
        "median of the per-round slimmed/dense ratios); `recheck` times the run's `model_pruned.pt` again in",
        f"another process against the dense architecture, {RECHECKS} times a minute or so apart (each 40",
        "interleaved rounds; the run's threads, memory format and clock: the thread's CPU time on one CPU thread,",
        "so waiting for a core on this shared machine does not count), and gives the median of the three and",
        "their range: how much the same pair of models drifts here. Target: within",
        f"{WITHIN:.0%} of the requested fraction.",
        "",
        "| case | budget batch | target (ms) | achieved (ms, fraction) | recheck (median; range) | MACs kept "
        "| round_to | timer calls | within 10% |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in data["cases"]:
        r, chk = c["result"], c["check"]
        res0 = c["resolutions"][-1] if c["resolutions"] else {}
        got = r["latency_achieved"] / r["latency_target"] - 1
        ok = "yes" if abs(got) <= WITHIN and chk["within"] else "NO"
        lines.append(
            f"| {c['case']} | {r['latency_budget_batch']} | {r['latency_target_ms']:.2f} ({r['latency_target']:g}x) | "
            f"{r['latency_achieved_ms']:.2f} ({r['latency_achieved']:.3f}x, {100 * got:+.1f}%) | "
            f"{chk['fraction']:.3f}x ({100 * (chk['fraction'] / r['latency_target'] - 1):+.1f}%; "
            f"{min(q['fraction'] for q in chk['repeats']):.3f}-{max(q['fraction'] for q in chk['repeats']):.3f}) | "
            f"{1 - r['macs_reduction']:.3f} | {r['round_to']} | {res0.get('timer_calls', '-')} | {ok} |"
        )
    lines.append("")
    for c in data["cases"]:
        lines += [f"## {c['case']}", "", "```", c["command"], "```", "", "```", c["table"], "```", ""]
        for res0 in c["resolutions"]:
            lines.append(
                f"- step {res0['step']}: {res0['probes']} probes, {res0['timer_calls']} timer calls, "
                f"{res0['seconds']:.1f} s; chosen {res0['ms']:.2f} ms of {res0['dense_ms']:.2f} ms dense "
                f"({res0['ratio']:.3f}x) at {res0['macs']:.3f} of the MACs, round_to {res0['round_to']}"
            )
        lines.append("")
    lines += command_block(data["command"])
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=float, default=0.6, help="the --latency fraction (default 0.6)")
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["digits", "resnet18"])
    ap.add_argument("--quick", action="store_true", help="digits only, target 0.8 (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--name", default="latency_budget")
    args = ap.parse_args(argv)
    target, cases = (0.8, ["digits"]) if args.quick else (args.target, args.cases)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"machine": machine_info(1), "command": command_line("latency_budget.py", argv),
                            "target": target, "cases": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases:
            c = run_case(name, target, Path(tmp))
            r = c["result"]
            print(
                f"  {name}: target {r['latency_target_ms']:.2f} ms, achieved {r['latency_achieved_ms']:.2f} ms "
                f"({r['latency_achieved']:.3f}x); recheck {c['check']['fraction']:.3f}x",
                flush=True,
            )
            data["cases"].append(c)
    save_page(out, args.name, data, write_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
