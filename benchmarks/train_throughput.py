"""Training throughput: the harness's training loop against a bare PyTorch loop on the same model, data and
batch, in one process, interleaved; and what channels_last and torch.compile gain.

    .venv/bin/python benchmarks/train_throughput.py --threads 1                 # both models (~30 min, 2 cores)
    .venv/bin/python benchmarks/train_throughput.py --threads 1 --quick         # smoke test: tiny, eager only
    .venv/bin/python benchmarks/train_throughput.py --threads 1 --models resnet20 --variants eager channels_last

Harness: ``prunekit.trainer.Trainer`` prepared from a Config (synthetic data, the model, SGD with momentum,
weight decay and the cosine LR schedule, ``magnitude`` at sparsity 0.5, so the masks are set at step 0 and
from then on only enforced: the steps *between* events), then ``Trainer._train_epoch``, the loop ``prunekit
run`` runs, over epochs of ``--steps`` batches: data to the device, forward, loss, backward, the controller's
gradient and weight masks, optimizer and LR schedule steps, the divergence check, the running loss and
accuracy. Bare: the same architecture and the same ``BatchStream`` epochs (same batches, same augmentation
cost), ``loss = cross_entropy(model(x), y); zero_grad(); backward(); step()`` with the same SGD, nothing else.

Each variant (eager; channels_last: model and inputs in NHWC; compile: ``torch.compile`` of the model) runs
both loops; one warm-up epoch each (compilation happens there), then rounds: each round times one short
epoch of every variant's two loops back to back (which loop goes first alternates between rounds, the order
of the variants rotates), so a load change on the shared machine hits the pair alike. Figures: images per
second of this process's CPU time (``time.process_time``: on a machine shared with other jobs, wall time also
counts the time spent waiting for a core; with one torch thread, CPU time is the work of the loop), the median
over rounds; harness / bare and the gains over eager are medians of the per-round ratios. The wall-clock
figures are in the JSON and in the last column.
Target: harness >= 0.95 of the bare loop. Writes ``train_throughput.md`` and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_common import command_block, command_line, machine_info, save_page  # noqa: E402

from prunekit.config import Config  # noqa: E402
from prunekit.env import make_env  # noqa: E402
from prunekit.models import build_model  # noqa: E402
from prunekit.runlog import Progress  # noqa: E402
from prunekit.trainer import Trainer  # noqa: E402

TARGET = 0.95
# model -> (input channels, side, batch, steps per timed epoch, rounds)
SETTINGS = {
    "resnet20": (1, 28, 64, 4, 15),  # Fashion-MNIST-sized input
    "resnet50": (3, 224, 8, 1, 5),  # ImageNet-sized input, a few steps
}
QUICK = {"resnet20": (1, 28, 32, 2, 2), "resnet50": (3, 64, 2, 1, 1)}
VARIANTS = ("eager", "channels_last", "compile")


def config(model: str, variant: str, threads: int, settings: tuple[int, int, int, int, int]) -> Config:
    channels, side, batch, steps, _ = settings
    cfg = Config()
    cfg.data.name = "synthetic"
    cfg.data.channels, cfg.data.image_size, cfg.data.num_classes = channels, side, 10
    cfg.data.train_size, cfg.data.test_fraction = steps * batch * 2, 0.5  # the training split: `steps` batches
    cfg.model.name = model
    cfg.train.batch_size, cfg.train.epochs, cfg.train.threads, cfg.train.device = batch, 1000, threads, "cpu"
    cfg.train.channels_last = variant == "channels_last"
    cfg.train.compile = variant == "compile"
    cfg.prune.strategy, cfg.prune.sparsity = "magnitude", 0.5
    cfg.run.progress = "off"
    return cfg


class HarnessLoop:
    """The harness's own epoch loop (``Trainer._train_epoch``) on a prepared Trainer."""

    def __init__(self, cfg: Config):
        self.trainer = Trainer(cfg, make_env(cfg), None, None, None)
        self.trainer.prepare()
        self.trainer._start_state()
        self.trainer.progress = Progress(False)
        self.stream, self.epoch = self.trainer.train_stream, 0
        assert self.trainer.controller is not None and self.trainer.controller.events  # masks set at step 0

    def run_epoch(self) -> int:
        self.epoch += 1
        self.trainer._train_epoch(self.epoch)
        return len(self.stream) * self.trainer.cfg.train.batch_size


class BareLoop:
    """A bare PyTorch loop over the same batches: forward, loss, zero_grad, backward, SGD step."""

    def __init__(self, cfg: Config, stream: Any, in_channels: int, side: int):
        torch.manual_seed(0)
        model = build_model(cfg.model.name, 10, in_channels, side)
        self.channels_last = cfg.train.channels_last
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        t = cfg.train
        self.opt = torch.optim.SGD(
            model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
        )
        self.net = torch.compile(model) if cfg.train.compile else model
        self.stream, self.epoch, self.batch = stream, 0, cfg.train.batch_size

    def run_epoch(self) -> int:
        self.epoch += 1
        n = 0
        for x, y in self.stream.epoch(self.epoch):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(self.net(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            n += len(y)
        return n


def timed(loop: Any) -> tuple[float, float]:
    """(images per CPU second of this process, images per wall-clock second) of one epoch of ``loop``."""
    c0, t0 = time.process_time(), time.perf_counter()
    images = loop.run_epoch()
    return images / (time.process_time() - c0), images / (time.perf_counter() - t0)


def bench_model(model: str, variants: list[str], threads: int, settings: tuple[int, int, int, int, int]) -> dict:
    channels, side, batch, steps, reps = settings
    loops: dict[tuple[str, str], Any] = {}
    compile_s: dict[str, float] = {}
    for v in variants:
        cfg = config(model, v, threads, settings)
        harness = HarnessLoop(cfg)
        bare = BareLoop(cfg, harness.stream, channels, side)
        for name, loop in (("harness", harness), ("bare", bare)):
            t0 = time.perf_counter()
            loop.run_epoch()  # warm-up (allocator, oneDNN primitives, optimizer state; compilation)
            compile_s[f"{v}/{name}"] = time.perf_counter() - t0
            loops[(v, name)] = loop
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in loops}  # images per CPU second
    walls: dict[tuple[str, str], list[float]] = {k: [] for k in loops}  # images per wall-clock second
    for r in range(reps):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:  # the variants in a rotating order
            pair = ("harness", "bare") if r % 2 == 0 else ("bare", "harness")  # the two loops back to back
            for name in pair:
                cpu, wall = timed(loops[(v, name)])
                rates[(v, name)].append(cpu)
                walls[(v, name)].append(wall)
    rows = []
    for v in variants:
        h, b = rates[(v, "harness")], rates[(v, "bare")]
        hw, bw = walls[(v, "harness")], walls[(v, "bare")]
        rows.append(
            {
                "variant": v,
                "bare_images_s": statistics.median(b),
                "harness_images_s": statistics.median(h),
                "harness_over_bare": statistics.median(x / y for x, y in zip(h, b, strict=True)),
                "bare_runs": b,
                "harness_runs": h,
                "wall_harness_over_bare": statistics.median(x / y for x, y in zip(hw, bw, strict=True)),
                "wall_bare_runs": bw,
                "wall_harness_runs": hw,
                "warmup_s": {"harness": compile_s[f"{v}/harness"], "bare": compile_s[f"{v}/bare"]},
            }
        )
    eager = next((row for row in rows if row["variant"] == "eager"), None)
    for row in rows:
        if eager is not None:
            for loop in ("bare", "harness"):
                row[f"{loop}_gain_over_eager"] = statistics.median(
                    x / y for x, y in zip(row[f"{loop}_runs"], eager[f"{loop}_runs"], strict=True)
                )
    return {"model": model, "input": f"{channels}x{side}x{side}", "batch": batch, "steps": steps, "reps": reps,
            "rows": rows}  # fmt: skip


def write_markdown(path: Path, data: dict) -> None:
    mc = data["machine"]
    lines = [
        "# Training throughput: the harness's loop against a bare PyTorch loop",
        "",
        "Images per second of `prunekit run`'s training loop (`Trainer._train_epoch`: a masked model with the",
        "`magnitude` strategy attached between its events, SGD with momentum and weight decay, the LR schedule,",
        "the controller's gradient and weight masks, the divergence check and the running loss/accuracy) against",
        "a bare PyTorch loop (forward, cross-entropy, `zero_grad`, `backward`, SGD `step`) on the same",
        "architecture and the same batches from the same `BatchStream` (synthetic data, so the same augmentation",
        "cost in both). One process; in every round each variant times one short epoch of its two loops back to",
        "back (the first alternating, the variants rotating); medians over rounds (harness / bare and the gains",
        "over eager: medians of the per-round ratios). Images per second of the process's **CPU time**",
        "(`time.process_time`): the machine is shared with other jobs, so wall time also counts waiting for a core,",
        "which swings from round to round; with one torch thread, CPU time is the loop's work. The wall-clock",
        "ratio is the last column.",
        f"Device: this machine's CPU ({mc['cpu']}, {mc['torch_threads']} torch thread(s); load average",
        f"{mc['load_1min_at_start']} at the start: the machine was shared, so compare within a table, not across",
        f"runs). Target: harness >= {TARGET} of the bare loop.",
        "",
    ]
    for m in data["models"]:
        lines += [
            f"## {m['model']}, input {m['input']}, batch {m['batch']}, {m['steps']} steps per timed epoch, "
            f"{m['reps']} rounds",
            "",
            "| variant | bare (images/CPU s) | harness (images/CPU s) | harness / bare | target | bare gain over eager "
            "| harness gain over eager | first epoch: harness / bare (s) | wall clock: harness / bare |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for row in m["rows"]:
            ok = "met" if row["harness_over_bare"] >= TARGET else "MISSED"
            g = row.get("bare_gain_over_eager")
            hg = row.get("harness_gain_over_eager")
            lines.append(
                f"| {row['variant']} | {row['bare_images_s']:.1f} | {row['harness_images_s']:.1f} | "
                f"{row['harness_over_bare']:.3f} | {ok} (>= {TARGET}) | "
                f"{'-' if g is None else f'{g:.2f}x'} | {'-' if hg is None else f'{hg:.2f}x'} | "
                f"{row['warmup_s']['harness']:.1f} / {row['warmup_s']['bare']:.1f} | "
                f"{row['wall_harness_over_bare']:.3f} |"
            )
        lines.append("")
    lines += [
        "channels_last: model and inputs in NHWC (`train.channels_last: true`); compile: `torch.compile` of the",
        "model (`train.compile: true`; its first epoch includes the compilation, which torch's inductor serves",
        "in part from its on-disk cache when this machine compiled the model before: a cold compile takes",
        "longer). The first-epoch column is the warm-up epoch (wall clock), not in the medians.",
        "",
        *command_block(data["command"]),
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=sorted(SETTINGS), default=["resnet20", "resnet50"])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                    help="default: all three for resnet20, eager and channels_last for resnet50 (compiling it on "
                    "a CPU takes many minutes)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="tiny inputs and rounds, eager only (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--name", default="train_throughput")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"machine": machine_info(args.threads), "command": command_line("train_throughput.py", argv),
                            "models": []}  # fmt: skip
    for model in args.models:
        if args.variants:
            variants = list(args.variants)
        elif args.quick:
            variants = ["eager", "channels_last"]
        else:
            variants = list(VARIANTS) if model == "resnet20" else ["eager", "channels_last"]
        settings = QUICK[model] if args.quick else SETTINGS[model]
        print(f"[train_throughput] {model}: {', '.join(variants)}", flush=True)
        res = bench_model(model, variants, args.threads, settings)
        for row in res["rows"]:
            print(
                f"  {row['variant']:14s} bare {row['bare_images_s']:8.1f}/s  harness {row['harness_images_s']:8.1f}/s"
                f"  ratio {row['harness_over_bare']:.3f}",
                flush=True,
            )
        data["models"].append(res)
    save_page(out, args.name, data, write_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
