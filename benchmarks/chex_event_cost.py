"""What one CHEX exploration step costs the network: the training loss on a fixed batch right before and right
after every pruning event of a run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chex_event_cost.py            # Fashion-MNIST, ResNet-20, 6 epochs
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chex_event_cost.py --param delta_T=2 --epochs 15
    .venv/bin/python benchmarks/chex_event_cost.py --quick                      # digits, 2 epochs (smoke test)

One ``pk.run`` of CHEX (configs/fashion_mnist_resnet20.yaml, the first ``--train-subset`` training images, 70%
MACs reduction by default). ``PruningController._event`` is wrapped so that a fixed batch of training images
(no augmentation) is scored just before the event and just after its masks are applied: cross-entropy in
train mode (BatchNorm normalizes with the batch's own statistics, so stale running statistics play no part;
they are restored after each measurement), without gradients. The difference is what the event did to the
function the network computes; the rest of training has to win it back. Writes ``chex_event_cost.md`` and
``chex_event_cost.json`` to ``--out`` (default docs/results/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402
from bench_common import command_block, command_line, machine_info  # noqa: E402
from torch import nn  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit.config import load_config  # noqa: E402
from prunekit.controller import PruningController  # noqa: E402
from prunekit.data import build_data  # noqa: E402

CONFIG = ROOT / "configs" / "fashion_mnist_resnet20.yaml"


def config(args: argparse.Namespace, runs: Path) -> Any:
    sets = [
        f"train.epochs={args.epochs}", f"train.seed={args.seed}", f"train.threads={args.threads}",
        f"prune.macs={1 - args.reduction:.6g}", "prune.strategy=chex", f"run.out={runs}", "run.name=chex",
        "run.progress=off", "run.checkpoint_steps=0", "run.latency_runs=1",
    ]  # fmt: skip
    if args.train_subset:
        sets.append(f"data.limit_train={args.train_subset}")
    if args.quick:
        sets += ["data.name=digits", "model.name=resnet20", "data.root=null"]
    sets += [f"prune.params.{p}" for p in args.param]
    return load_config(None if args.quick else str(CONFIG), sets=sets)


def fixed_batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of ``model`` on (x, y) in train mode, no gradients, BN running statistics untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    was = model.training
    model.train()
    with torch.no_grad():
        dev = next(model.parameters()).device
        loss = float(nn.functional.cross_entropy(model(x.to(dev)).float(), y.to(dev)))
        for m, (mean, var, n) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
    model.train(was)
    return loss


def measure(args: argparse.Namespace, runs: Path) -> dict[str, Any]:
    cfg = config(args, runs)
    data = build_data(cfg.data)
    x, y = data.train.batch(torch.arange(min(args.batch, len(data.train))))  # no generator: no augmentation
    rows: list[dict[str, Any]] = []
    original = PruningController._event

    def instrumented(self: PruningController) -> None:
        before = fixed_batch_loss(self.model, x, y)
        active_before = sum(int(m.sum()) for m in self.keep.values())
        original(self)
        after = fixed_batch_loss(self.model, x, y)
        e = self.events[-1]
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None
        rows.append({
            "step": e["step"], "epoch": e["epoch"], "lr": lr, "kind": e["kind"], "loss_before": before,
            "loss_after": after, "change": after - before, "out": e["pruned"],
            "in": e["kept_total"] - active_before + e["pruned"], "regrown": e["regrown"],
            "active_after": e["kept_total"], "channels": e["channels_total"], "regrow_fraction": e["regrow_fraction"],
        })  # fmt: skip

    PruningController._event = instrumented
    try:
        res = pk.run(cfg)
    finally:
        PruningController._event = original
    return {"rows": rows, "top1": res.top1, "macs_reduction": res.macs_reduction, "dataset": res.dataset,
            "model": res.model, "status": res.status, "config": cfg.to_dict()}  # fmt: skip


def write(out: Path, data: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chex_event_cost.json").write_text(json.dumps(data, indent=1, default=str))
    s, r, mc = data["settings"], data["result"], data["machine"]
    later = [row for row in r["rows"] if row["step"] > 0]
    subset = f"the first {s['train_subset']}" if s["train_subset"] else "all"
    lines = [
        "# What a CHEX exploration step costs the network",
        "",
        f"CHEX on {r['dataset']} / {r['model']}, {s['epochs']} epochs on {subset} training images, "
        f"{s['reduction']:.0%} MACs reduction (measured on the slimmed model: "
        f"{r['macs_reduction']:.1%}), seed {s['seed']}, strategy parameters {s['params'] or 'defaults'}; final "
        f"top-1 {r['top1']:.2f}%. *Loss* is the cross-entropy on a fixed batch of {s['batch']} training images "
        "(no augmentation, train-mode BatchNorm, no gradients) right before and right after the event; "
        "*active* counts the channels kept after it, of all prunable channels.",
        "",
        "| step | epoch | lr | event | loss before | loss after | change | out | in | regrow step | active after |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lr = "-" if row["lr"] is None else f"{row['lr']:.4f}"
        lines.append(
            f"| {row['step']} | {row['epoch']:.2f} | {lr} | {row['kind']} | {row['loss_before']:.3f} | "
            f"{row['loss_after']:.3f} | {row['change']:+.3f} | {row['out']} | {row['in']} | {row['regrown']} | "
            f"{row['active_after']}/{row['channels']} |"
        )
    if later:
        ch = [row["change"] for row in later]
        worst = max(later, key=lambda row: row["change"])
        lines += [
            "",
            f"Over the {len(later)} events after step 0: loss change median {statistics.median(ch):+.3f}, largest "
            f"{worst['change']:+.3f} (step {worst['step']}: {worst['loss_before']:.3f} -> {worst['loss_after']:.3f}, "
            f"{worst['out']} channels out and {worst['in']} in). *out* / *in*: channels active before and not "
            "after the event / after and not before; *regrow step*: channels the regrow step brought back, those "
            "pruned a moment before in the same event included.",
        ]
    lines += [
        "",
        f"Machine: {mc['cpu']}, {mc['cores']} cores, {mc['torch_threads']} torch thread(s); torch {mc['torch']}, "
        f"prunekit {mc['prunekit']}. {data['total_s']:.0f} s.",
        "",
        *command_block(data["command"]),
    ]
    (out / "chex_event_cost.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="default 6 (--quick: 2)")
    ap.add_argument("--reduction", type=float, default=0.7, help="fraction of the dense MACs removed (default 0.7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int, default=None, help="train on the first N images (default 5000)")
    ap.add_argument("--batch", type=int, default=512, help="images in the fixed batch (default 512)")
    ap.add_argument("--param", action="append", default=None, metavar="KEY=VALUE",
                    help="a CHEX parameter (default: delta_T=0.5)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="digits, 2 epochs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    args = ap.parse_args(argv)
    args.epochs = args.epochs or (2 if args.quick else 6)
    args.param = args.param if args.param is not None else ["delta_T=0.5"]
    for p in args.param:
        if "=" not in p:
            ap.error(f"--param {p!r}: expected KEY=VALUE, e.g. delta_T=0.5")
    if args.train_subset is None and not args.quick:
        args.train_subset = 5000
    if not 0 < args.reduction < 1:
        ap.error(f"--reduction is the fraction of MACs removed, strictly between 0 and 1; got {args.reduction}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    result = measure(args, ROOT / "runs" / f"chex_event_cost-{time.strftime('%Y%m%d-%H%M%S')}")
    data = {
        "command": command_line("chex_event_cost.py", argv),
        "machine": machine_info(args.threads),
        "settings": {"epochs": args.epochs, "reduction": args.reduction, "seed": args.seed, "batch": args.batch,
                     "train_subset": args.train_subset, "quick": args.quick,
                     "params": {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}},
        "result": result,
        "total_s": time.perf_counter() - t0,
    }  # fmt: skip
    write(out, data)
    for row in result["rows"]:
        print(f"step {row['step']:5d}  loss {row['loss_before']:.3f} -> {row['loss_after']:.3f}  "
              f"out {row['out']:4d}  in {row['in']:4d}", flush=True)  # fmt: skip
    return data


if __name__ == "__main__":
    main()
