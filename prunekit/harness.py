"""The training harness: one loop for every strategy.

    result = pk.run(cfg)                 # what `prunekit run` does; cfg: Config, mapping or YAML path
    result = pk.run(None, resume="runs/chex-digits-resnet20-...")   # continue an interrupted run
    results = compare(cfg, ["chex", "magnitude", "random"], dense=True)

Per run: data and model from the config, the channel graph (``pk.build_graph``), the strategy from the
registry and a ``PruningController`` that keeps the masks during training; SGD/AdamW with a per-step
warm-up + cosine/step schedule; evaluation every epoch (top-1, top-5 when classes > 5, loss); CUDA + AMP
+ channels_last when a GPU is used, CPU otherwise; DDP when started by torchrun (gloo on CPU). At the end
the masked model is slimmed (``pk.slim``), measured (params, MACs, latency beside the dense model) and
written as a pruning plan (``pk.load_pruned``).

Run directory (rank 0 writes it):
    config.yaml     the resolved config           metrics.csv   one row per epoch
    result.json     the RunResult                 events.json   the controller's prune/regrow events
    checkpoint.pt   full training state (atomic)  checkpoint.json  epoch/batch/step of that checkpoint
    model_pruned.pt the slimmed model as a plan   run.log       the log
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import random
import statistics
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from . import checkpoint as ckpt
from .config import Config, ConfigError, from_dict, load_config
from .data import BatchStream, DataBundle, build_data
from .graphs.trace import unwrap
from .models import build_model, check_model, resolve_leaf_modules
from .plan import check_factory, is_trusted_factory, load_pruned

log = logging.getLogger("prunekit")

DENSE_NAMES = ("none", "dense")
MODEL_FACTORY = "prunekit.models:build_model"
SMALL_MODEL_MACS = 10_000_000  # below this (per sample), CPU training uses 1 thread unless train.threads is set


# ---------------------------------------------------------------------------------------- result


@dataclass
class RunResult:
    """What one run produced; ``result.json`` holds the same fields."""

    strategy: str
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    run_dir: str | None = None
    dataset: str | None = None
    model: str | None = None
    seed: int | None = None
    epochs: int | None = None
    device: str | None = None
    world_size: int = 1
    top1: float | None = None  # percent, final epoch
    top5: float | None = None
    loss: float | None = None
    best_top1: float | None = None
    dense_top1: float | None = None  # filled in by compare when a dense baseline ran
    params: int | None = None  # slimmed model
    macs: int | None = None  # slimmed model, per sample
    dense_params: int | None = None
    dense_macs: int | None = None
    macs_reduction: float | None = None  # 1 - macs / dense_macs
    latency_ms: float | None = None  # slimmed model, median, batch ``latency_batch``
    dense_latency_ms: float | None = None
    speedup: float | None = None
    latency_batch: int | None = None
    train_seconds: float | None = None
    event_seconds: float | None = None
    num_events: int = 0
    slim_max_abs_diff: float | None = None  # |slim(x) - masked(x)| on a test batch
    kept: dict[str, int] = field(default_factory=dict)  # final channels per group
    group_sizes: dict[str, int] = field(default_factory=dict)
    ddp: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "dense" if self.strategy in DENSE_NAMES else self.strategy

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_dir(cls, run_dir: str) -> RunResult:
        path = os.path.join(run_dir, "result.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir} has no result.json: not a finished prunekit run directory")
        with open(path) as f:
            res = cls.from_dict(json.load(f))
        res.run_dir = run_dir
        return res


# ---------------------------------------------------------------------------------------- environment


@dataclass
class Env:
    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _init_distributed(device_pref: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device_pref != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return dist.get_rank(), dist.get_world_size()


def make_env(cfg: Config) -> Env:
    t = cfg.train
    rank, world = _init_distributed(t.device)
    pref = t.device
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={t.device!r} but CUDA is not available; use --device cpu (or auto)")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if pref == "cuda" else torch.device(pref)
    elif pref == "cpu":
        device = torch.device("cpu")
    else:
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
    amp_dtype = None
    if device.type == "cuda" and t.amp != "off":
        if t.amp == "fp16":
            amp_dtype = torch.float16
        elif t.amp == "bf16" or torch.cuda.is_bf16_supported():
            amp_dtype = torch.bfloat16
        else:
            amp_dtype = torch.float16
    cl = t.channels_last if t.channels_last is not None else device.type == "cuda"
    return Env(device, rank, world, amp_dtype, cl)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = torch.cuda.is_available()


# ---------------------------------------------------------------------------------------- pieces


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: with ``decay_norm_and_bias`` false, parameters with fewer than 2
    dimensions (norm-layer weights and biases, every bias) get no weight decay, the others ``weight_decay``."""
    params = list(model.parameters())
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    t = cfg.train
    groups = param_groups(model, t.weight_decay, t.decay_norm_and_bias)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov and t.momentum > 0,
            weight_decay=t.weight_decay,
        )
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(step: int, cfg: Config, steps_per_epoch: int) -> float:
    """The LR multiplier at optimizer step ``step`` (0-based): linear warm-up, then cosine/step/constant."""
    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    warm = int(round(t.warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if t.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if t.schedule == "step":
        passed = sum(step >= int(m * total) for m in t.step_milestones)
        return t.step_gamma**passed
    return 1.0


def check_strategies(cfg: Config, names: list[str]) -> None:
    """Build each named strategy (and each of ``prune.strategy_params``) with the parameters the config gives
    it, so that a misspelt name or parameter fails before any training, naming where it came from."""
    from .registry import get_strategy

    for name in cfg.prune.strategy_params:
        if name in DENSE_NAMES:
            raise ConfigError(f"prune.strategy_params.{name}: the dense run takes no parameters; remove it")
        try:
            get_strategy(name, **cfg.strategy_kwargs(name))
        except (KeyError, ValueError, TypeError) as e:  # unknown strategy, bad parameter
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ConfigError(f"prune.strategy_params.{name}: {msg}") from e
    for name in names:
        if name not in DENSE_NAMES:
            get_strategy(name, **cfg.strategy_kwargs(name))


def make_controller(model: nn.Module, graph: Any, cfg: Config, steps_per_epoch: int) -> Any | None:
    """The PruningController for ``cfg.prune`` (None for dense training)."""
    if cfg.prune.strategy in DENSE_NAMES:
        return None
    from .controller import PruningController
    from .registry import get_strategy
    from .strategy import Budget

    strategy = get_strategy(cfg.prune.strategy, **cfg.strategy_kwargs())
    budget = Budget(**cfg.budget_kwargs())
    return PruningController(model, graph, strategy, budget, steps_per_epoch, cfg.train.epochs, seed=cfg.train.seed)


@torch.no_grad()
def evaluate(model: nn.Module, stream: BatchStream, env: Env, num_classes: int) -> dict[str, float]:
    """Top-1, top-5 (classes > 5) in percent and mean loss over the split (summed over DDP ranks)."""
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1, top5, count
    for x, y in stream.epoch(0):
        x, y = _to_device(x, y, env)
        with _autocast(env):
            out = _logits(model(x))
        sums[0] += float(F.cross_entropy(out.float(), y, reduction="sum"))
        k = min(5, num_classes)
        top = out.topk(k, dim=1).indices
        hit = top == y.view(-1, 1)
        sums[1] += float(hit[:, 0].sum())
        sums[2] += float(hit.any(dim=1).sum())
        sums[3] += len(y)
    if env.distributed:
        import torch.distributed as dist

        sums = sums.to(env.device) if env.device.type == "cuda" else sums
        dist.all_reduce(sums)
        sums = sums.cpu()
    model.train(was)
    n = max(1.0, float(sums[3]))
    res = {"test_loss": float(sums[0]) / n, "top1": 100.0 * float(sums[1]) / n}
    if num_classes > 5:
        res["top5"] = 100.0 * float(sums[2]) / n
    return res


@torch.no_grad()
def recalibrate_bn(model: nn.Module, stream: BatchStream, epoch: int, batches: int, env: Env) -> int:
    """Re-estimate the running mean and variance of every BatchNorm layer from the first ``batches``
    training batches of ``epoch`` (train-mode forward passes, no gradients, a plain average over the
    batches; averaged over DDP ranks). Returns the number of batches used.

    Why: after a pruning event changed the masks, the running statistics describe the network before the
    event (regrown channels come back with the statistics they had when pruned, and every layer after them
    sees other inputs), so an evaluation right after it measures stale statistics, not the network. Training
    itself is unaffected: in train mode BatchNorm normalizes with the batch's own statistics."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    was = model.training
    model.train()
    used = 0
    try:
        for x, y in stream.epoch(epoch):
            if used >= batches:
                break
            x, _ = _to_device(x, y, env)
            with _autocast(env):
                model(x)
            used += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was)
    if env.distributed:
        import torch.distributed as dist

        for m in bns:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(env.world)
    return used


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}; the harness needs a logits tensor")


def _to_device(x: torch.Tensor, y: torch.Tensor, env: Env) -> tuple[torch.Tensor, torch.Tensor]:
    nb = env.device.type == "cuda"
    x = x.to(env.device, non_blocking=nb)
    if env.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(env.device, non_blocking=nb)


def _autocast(env: Env) -> contextlib.AbstractContextManager[Any]:
    if env.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(env.device.type, dtype=env.amp_dtype)


@torch.no_grad()
def measure_latency(
    models: list[nn.Module], example: torch.Tensor, env: Env, runs: int = 20, warmup: int = 5
) -> list[float]:
    """Median wall time of ``model(example)`` in milliseconds for each model (eval mode, same device and
    autocast as training). The models run interleaved, so a load change on the machine hits all alike."""
    x = example.to(env.device)
    if env.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    times: list[list[float]] = [[] for _ in models]
    sync = torch.cuda.synchronize if env.device.type == "cuda" else (lambda: None)
    with _autocast(env):
        for i in range(warmup + runs):
            order = list(enumerate(models))
            for k, m in order if i % 2 == 0 else order[::-1]:  # alternate the order: no position bias
                sync()
                t0 = time.perf_counter()
                m(x)
                sync()
                if i >= warmup:
                    times[k].append((time.perf_counter() - t0) * 1000.0)
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    return [statistics.median(t) for t in times]


def mask_digest(keep: dict[str, torch.Tensor]) -> str:
    """A short hash of a keep dict (to compare masks across DDP ranks and runs)."""
    h = hashlib.sha256()
    for gid in sorted(keep):
        h.update(gid.encode())
        h.update(keep[gid].to(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def events_digest(events: list[dict[str, Any]]) -> str:
    """A short hash of the controller's decisions (events without their timings)."""
    timeless = [{k: v for k, v in ev.items() if "second" not in k and "time" not in k} for ev in events]
    return hashlib.sha256(json.dumps(ckpt.jsonable(timeless), sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_spec(cfg: Config, data: DataBundle) -> dict[str, Any]:
    """Keyword arguments of ``prunekit.models.build_model`` that rebuild the dense architecture."""
    return {
        "name": cfg.model.name,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "input_size": data.input_size,
        **cfg.model.kwargs,
    }


# ---------------------------------------------------------------------------------------- run directory


def default_run_name(cfg: Config) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    model = cfg.model.name.replace(":", "-").replace(".", "-").replace("/", "-")
    return f"{cfg.prune.strategy}-{cfg.data.name}-{model}-{stamp}"


def make_run_dir(cfg: Config, env: Env) -> str:
    """Create the run directory on rank 0 (a fresh name if it exists) and share its path with all ranks."""
    path = None
    if env.main:
        name = cfg.run.name or default_run_name(cfg)
        base = os.path.join(cfg.run.out, name)
        path, k = base, 2
        while os.path.exists(path) and os.listdir(path):
            path, k = f"{base}-{k}", k + 1
        os.makedirs(path, exist_ok=True)
        path = os.path.abspath(path)
    if env.distributed:
        import torch.distributed as dist

        box = [path]
        dist.broadcast_object_list(box, src=0)
        path = box[0]
    assert path is not None
    return path


class _RunLog:
    """Logging for one run: console (rich on a terminal, plain otherwise) + run.log, rank 0 only."""

    def __init__(self, run_dir: str, env: Env, progress: str):
        self.handlers: list[logging.Handler] = []
        self.console: Any = None
        self.rich = progress == "rich" or (progress == "auto" and sys.stderr.isatty())
        log.setLevel(logging.INFO)
        log.propagate = False
        if not env.main:
            return
        fh = logging.FileHandler(os.path.join(run_dir, "run.log"))
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.handlers.append(fh)
        if progress != "off":
            if self.rich:
                from rich.console import Console
                from rich.logging import RichHandler

                self.console = Console(stderr=True)  # shared with the progress bar, so lines and bar interleave
                ch: logging.Handler = RichHandler(console=self.console, show_path=False, markup=False)
            else:
                ch = logging.StreamHandler(sys.stderr)
                ch.setFormatter(logging.Formatter("[prunekit] %(message)s"))
            self.handlers.append(ch)
        for h in self.handlers:
            log.addHandler(h)

    def close(self) -> None:
        for h in self.handlers:
            log.removeHandler(h)
            h.close()


class _Progress:
    """A rich progress bar per epoch on a terminal; nothing otherwise (plain mode logs lines instead)."""

    def __init__(self, enabled: bool, console: Any = None):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=console,
                transient=True,
            )
            self.bar.start()
        self.task: Any = None

    def epoch(self, description: str, total: int, done: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total, completed=done, info="")

    def advance(self, info: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------------------- run


def _resolve(config: Config | dict[str, Any] | str | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config.copy()
    if isinstance(config, dict):
        return from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(str(config))
    raise TypeError(f"run() takes a Config, a mapping or a YAML path, got {type(config).__name__}")


def run(
    config: Config | dict[str, Any] | str | None = None,
    resume: str | None = None,
    trust_checkpoint: bool = False,
    trusted_factories: Iterable[str] = (),
) -> RunResult:
    """Train one strategy end to end and write its run directory; returns the RunResult.

    ``resume``: a run directory with a checkpoint; its config.yaml is used (``config`` is ignored) and
    training continues from the checkpoint's exact position (mid-epoch included). The directory is read as
    data: a model factory its config names must be trusted (see ``check_run_model``) and the checkpoint
    loads with ``weights_only=True``. ``trust_checkpoint=True`` trusts the whole directory instead: the
    full unpickler (needed for checkpoints of the first format) and any factory; it runs pickled code."""
    if resume is not None:
        cfg_path = os.path.join(resume, "config.yaml")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"--resume {resume}: no config.yaml there; is it a prunekit run directory?")
        cfg = load_config(cfg_path)
        if not trust_checkpoint:
            check_run_model({"name": cfg.model.name, **cfg.model.kwargs}, resume, trusted_factories)
        blob = ckpt.load_checkpoint(resume, map_location="cpu", trust=trust_checkpoint)  # a refusal fails fast
    else:
        cfg, blob = _resolve(config), None
    cfg.budget_kwargs()
    check_strategies(cfg, [cfg.prune.strategy])  # a misspelt strategy or parameter fails before any work
    env = make_env(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    run_dir = os.path.abspath(resume) if resume is not None else make_run_dir(cfg, env)
    runlog = _RunLog(run_dir, env, cfg.run.progress)
    try:
        return _Trainer(cfg, env, run_dir, blob, runlog).fit()
    finally:
        runlog.close()


class _Trainer:
    def __init__(self, cfg: Config, env: Env, run_dir: str, checkpoint: dict[str, Any] | None, runlog: _RunLog):
        self.cfg, self.env, self.run_dir, self.runlog = cfg, env, run_dir, runlog
        self.checkpoint, self.resuming = checkpoint, checkpoint is not None  # resuming from this loaded blob

    # the whole job, top to bottom
    def fit(self) -> RunResult:
        cfg, env = self.cfg, self.env
        if env.main and not self.resuming:
            ckpt.write_text(os.path.join(self.run_dir, "config.yaml"), cfg.to_yaml())
        log.info("run dir %s", self.run_dir)
        data = build_data(cfg.data)
        self.data = data
        model = build_model(cfg.model.name, data.num_classes, data.in_channels, data.input_size, **cfg.model.kwargs)
        leaf_modules = resolve_leaf_modules(model, cfg.model.leaf_modules)
        check_model(model, data.in_channels, data.input_size, data.num_classes, cfg.model.name)
        example = torch.zeros(1, data.in_channels, data.input_size, data.input_size)
        import prunekit as pk

        t0 = time.perf_counter()
        graph = pk.build_graph(model, example, leaf_modules=leaf_modules)
        log.info(
            "%s on %s: %s (built in %.1fs); device %s%s",
            cfg.model.name,
            data.name,
            graph,
            time.perf_counter() - t0,
            env.device,
            f", {env.world} DDP ranks" if env.distributed else "",
        )
        dense_macs = pk.count_macs(model, example)
        dense_params = pk.count_params(model)
        if cfg.train.threads is None and env.device.type == "cpu" and dense_macs < SMALL_MODEL_MACS:
            # intra-op threads do not pay for tiny convolutions, and on a busy machine OpenMP threads
            # waiting on each other make a step many times slower (measured: 0.06 s vs 0.4-1.9 s per step)
            torch.set_num_threads(1)
            log.info(
                "small model (%s MACs per sample) on CPU: 1 torch thread (set train.threads to override)",
                f"{dense_macs:,}",
            )

        model.to(env.device)
        if env.channels_last:
            model.to(memory_format=torch.channels_last)
        t = cfg.train
        train_stream = BatchStream(data.train, t.batch_size, True, t.seed, env.rank, env.world, cfg.data.workers)
        test_stream = BatchStream(data.test, t.eval_batch_size, False, t.seed, env.rank, env.world, cfg.data.workers)
        spe = len(train_stream)
        self.train_stream = train_stream
        self.spec, self.steps_per_epoch = model_spec(cfg, data), spe
        optimizer = build_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, spe))
        scaler = torch.amp.GradScaler("cuda", enabled=env.amp_dtype == torch.float16)
        controller = make_controller(model, graph, cfg, spe)
        if controller is not None:
            controller.start(optimizer)
        net: nn.Module = model
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)

        state = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "history": [],
            "best_top1": None,
            "train_seconds": 0.0,
            "acc": [0.0, 0.0, 0],
        }
        if self.resuming:
            state = self._load(model, optimizer, scheduler, scaler, controller)
            log.info("resumed at epoch %d batch %d (step %d)", state["epoch"] + 1, state["batch"], state["step"])

        progress = _Progress(self.runlog.rich and env.main and cfg.run.progress != "off", self.runlog.console)
        crit = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
        try:
            for epoch in range(state["epoch"], t.epochs):
                start = state["batch"] if epoch == state["epoch"] else 0
                if start == 0:
                    state["acc"] = [0.0, 0.0, 0]
                t_epoch = time.perf_counter()
                progress.epoch(f"epoch {epoch + 1}/{t.epochs}", spe, start)
                net.train()
                for b, (x, y) in enumerate(train_stream.epoch(epoch, start), start=start):
                    x, y = _to_device(x, y, env)
                    with _autocast(env):
                        out = _logits(net(x))
                        loss = crit(out.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if controller is not None:
                        controller.after_backward()
                    scaler.step(optimizer)
                    scaler.update()
                    if controller is not None:
                        controller.after_optimizer_step()
                    scheduler.step()
                    state["step"] += 1
                    state["batch"] = b + 1
                    acc = state["acc"]
                    acc[0] += float(loss.detach()) * len(y)
                    acc[1] += float((out.detach().argmax(1) == y).sum())
                    acc[2] += len(y)
                    progress.advance(f"loss {acc[0] / max(1, acc[2]):.4f}")
                    if cfg.run.log_every and state["step"] % cfg.run.log_every == 0:
                        log.info(
                            "epoch %d step %d loss %.4f lr %.4g",
                            epoch + 1,
                            state["step"],
                            acc[0] / max(1, acc[2]),
                            optimizer.param_groups[0]["lr"],
                        )
                    mid = cfg.run.checkpoint_steps and b + 1 < spe and (b + 1) % cfg.run.checkpoint_steps == 0
                    if mid:
                        state["epoch"] = epoch
                        state["train_seconds"] += time.perf_counter() - t_epoch
                        t_epoch = time.perf_counter()
                        self._save(state, model, optimizer, scheduler, scaler, controller)
                state["train_seconds"] += time.perf_counter() - t_epoch
                row = self._epoch_row(epoch, state, optimizer, net, test_stream, controller, graph)
                state["history"].append(row)
                if state["best_top1"] is None or row["top1"] > state["best_top1"]:
                    state["best_top1"] = row["top1"]
                state.update(epoch=epoch + 1, batch=0)
                self._log_epoch(row)
                if env.main:
                    ckpt.write_csv(os.path.join(self.run_dir, "metrics.csv"), state["history"])
                self._save(state, model, optimizer, scheduler, scaler, controller)
        finally:
            progress.close()
        return self._finish(state, model, graph, controller, example, dense_macs, dense_params, test_stream)

    def _epoch_row(
        self,
        epoch: int,
        state: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        net: nn.Module,
        test_stream: BatchStream,
        controller: Any,
        graph: Any,
    ) -> dict[str, Any]:
        env = self.env
        acc = torch.tensor(state["acc"][:2] + [float(state["acc"][2])], dtype=torch.float64)
        if env.distributed:
            import torch.distributed as dist

            acc = acc.to(env.device) if env.device.type == "cuda" else acc
            dist.all_reduce(acc)
            acc = acc.cpu()
        n = max(1.0, float(acc[2]))
        recalibrated = 0
        last_eval = state["history"][-1]["step"] if state["history"] else 0
        if controller is not None and any(last_eval < e["step"] for e in controller.events if e["step"] > 0):
            recalibrated = recalibrate_bn(
                unwrap(net), self.train_stream, epoch, self.cfg.train.bn_recalibration, env
            )
        ev = self._eval(net, test_stream)
        keep = controller.keep if controller is not None else graph.full_keep()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": state["step"],
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(acc[0]) / n,
            "train_top1": 100.0 * float(acc[1]) / n,
            **ev,
            "kept_channels": int(sum(int(m.sum()) for m in keep.values())),
            "total_channels": graph.total_channels,
            "graph_macs": graph.macs(keep),
            "train_seconds": state["train_seconds"],
            "event_seconds": float(controller.event_seconds) if controller is not None else 0.0,
            "bn_recalibrated": recalibrated,
        }
        return row

    def _eval(self, net: nn.Module, stream: BatchStream) -> dict[str, float]:
        return evaluate(net, stream, self.env, self.data.num_classes)

    def _log_epoch(self, row: dict[str, Any]) -> None:
        t5 = f" top5 {row['top5']:.2f}" if "top5" in row else ""
        log.info(
            "epoch %d/%d  train_loss %.4f  test_loss %.4f  top1 %.2f%s  channels %d/%d  lr %.4g  %.1fs",
            row["epoch"],
            self.cfg.train.epochs,
            row["train_loss"],
            row["test_loss"],
            row["top1"],
            t5,
            row["kept_channels"],
            row["total_channels"],
            row["lr"],
            row["train_seconds"],
        )

    # checkpoints
    def _save(
        self,
        state: dict[str, Any],
        model: nn.Module,
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        controller: Any,
    ) -> None:
        if not self.env.main:
            return
        blob = {
            "format": ckpt.FORMAT,
            **copy.deepcopy(
                {k: state[k] for k in ("epoch", "batch", "step", "history", "best_top1", "train_seconds", "acc")}
            ),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "controller": controller.state_dict() if controller is not None else None,
            "rng": ckpt.rng_state(),
            "keep": {k: v.cpu() for k, v in (controller.keep if controller is not None else {}).items()},
            "model_spec": self.spec,
            "steps_per_epoch": self.steps_per_epoch,
        }
        ckpt.save_checkpoint(self.run_dir, blob)

    def _load(self, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any, controller: Any) -> dict[str, Any]:
        blob, self.checkpoint = self.checkpoint, None  # loaded (and checked) by run(); not kept after this
        assert blob is not None
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        scaler.load_state_dict(blob["scaler"])
        if controller is not None:
            if blob.get("controller") is None:
                raise ValueError(f"{self.run_dir}: the checkpoint has no controller state but the config prunes")
            controller.load_state_dict(blob["controller"])
        ckpt.set_rng_state(blob["rng"])
        return {k: blob[k] for k in ("epoch", "batch", "step", "history", "best_top1", "train_seconds", "acc")}

    # the end: slim, measure, write
    def _finish(
        self,
        state: dict[str, Any],
        model: nn.Module,
        graph: Any,
        controller: Any,
        example: torch.Tensor,
        dense_macs: int,
        dense_params: int,
        test_stream: BatchStream,
    ) -> RunResult:
        import prunekit as pk

        cfg, env, data = self.cfg, self.env, self.data
        keep = {k: v.cpu() for k, v in (controller.keep if controller is not None else graph.full_keep()).items()}
        events = list(controller.events) if controller is not None else []
        last = state["history"][-1] if state["history"] else {}
        res = RunResult(
            strategy=cfg.prune.strategy,
            run_dir=self.run_dir,
            dataset=data.name,
            model=cfg.model.name,
            seed=cfg.train.seed,
            epochs=cfg.train.epochs,
            device=str(env.device),
            world_size=env.world,
            top1=last.get("top1"),
            top5=last.get("top5"),
            loss=last.get("test_loss"),
            best_top1=state["best_top1"],
            dense_params=dense_params,
            dense_macs=dense_macs,
            train_seconds=state["train_seconds"],
            event_seconds=float(controller.event_seconds) if controller is not None else 0.0,
            num_events=len(events),
            kept={g.id: int(keep[g.id].sum()) if g.id in keep else g.size for g in graph.groups},
            group_sizes={g.id: g.size for g in graph.groups},
        )
        if env.distributed:
            import torch.distributed as dist

            mine = {
                "masks": mask_digest(keep),
                "events": events_digest(events),
            }
            everyone: list[Any] = [None] * env.world
            dist.all_gather_object(everyone, mine)
            res.ddp = {
                "world_size": env.world,
                "mask_digests": [e["masks"] for e in everyone],
                "event_digests": [e["events"] for e in everyone],
                "masks_identical": len({e["masks"] for e in everyone}) == 1,
                "events_identical": len({e["events"] for e in everyone}) == 1,
            }
        if not env.main:
            return res

        bare = model.cpu().float().to(memory_format=torch.contiguous_format)
        bare.eval()
        small = pk.slim(bare, graph, keep)
        res.params = pk.count_params(small)
        res.macs = pk.count_macs(small, example)
        res.macs_reduction = 1.0 - res.macs / dense_macs if dense_macs else None
        x, _ = next(iter(test_stream.epoch(0)))
        with torch.no_grad():
            res.slim_max_abs_diff = float((_logits(small(x[:16])) - _logits(bare(x[:16]))).abs().max())
        lat_x = torch.zeros(cfg.run.latency_batch, data.in_channels, data.input_size, data.input_size)
        small_d = copy.deepcopy(small).to(env.device)
        dense_d = copy.deepcopy(bare).to(env.device)
        if env.channels_last:
            small_d.to(memory_format=torch.channels_last)
            dense_d.to(memory_format=torch.channels_last)
        res.latency_ms, res.dense_latency_ms = measure_latency([small_d, dense_d], lat_x, env, cfg.run.latency_runs)
        res.speedup = res.dense_latency_ms / res.latency_ms if res.latency_ms else None
        res.latency_batch = cfg.run.latency_batch
        del small_d, dense_d

        pk.save_pruned(
            os.path.join(self.run_dir, "model_pruned.pt"),
            small,
            graph,
            keep,
            factory=MODEL_FACTORY,
            factory_kwargs=model_spec(cfg, data),
        )
        ckpt.write_json(os.path.join(self.run_dir, "events.json"), events)
        ckpt.write_json(os.path.join(self.run_dir, "result.json"), res.to_dict())
        if len(events) > 1:
            from .plots import plot_exploration

            with contextlib.suppress(Exception):  # a plot must never fail a finished run
                plot_exploration(events, res.group_sizes, os.path.join(self.run_dir, "exploration.png"), res.name)
        log.info(
            "done: top1 %.2f%%, MACs %s -> %s (-%.1f%%), params %s -> %s, latency %.2f -> %.2f ms (x%.2f), "
            "train %.1fs (pruning events %.2fs)",
            res.top1 or float("nan"),
            f"{dense_macs:,}",
            f"{res.macs:,}",
            100 * (res.macs_reduction or 0),
            f"{dense_params:,}",
            f"{res.params:,}",
            res.dense_latency_ms,
            res.latency_ms,
            res.speedup or 0,
            res.train_seconds or 0,
            res.event_seconds or 0,
        )
        return res


# ---------------------------------------------------------------------------------------- compare


def compare(
    config: Config | dict[str, Any] | str | None,
    strategies: list[str],
    dense: bool = False,
    out_dir: str | None = None,
) -> tuple[list[RunResult], str]:
    """Run each strategy (and a dense baseline when ``dense``) on the same config, in sub-directories of
    one compare directory; a strategy that fails is recorded with its error and the others go on.
    Writes comparison tables (Markdown/CSV/JSON) and plots there; returns (results, compare dir)."""
    cfg = _resolve(config)
    env = make_env(cfg)
    if out_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_dir = os.path.join(cfg.run.out, cfg.run.name or f"compare-{cfg.data.name}-{cfg.model.name}-{stamp}")
    if env.distributed:
        import torch.distributed as dist

        box = [out_dir]
        dist.broadcast_object_list(box, src=0)
        out_dir = box[0]
    out_dir = os.path.abspath(out_dir)
    names = (["none"] if dense and not any(s in DENSE_NAMES for s in strategies) else []) + list(strategies)
    check_strategies(cfg, names)  # every name and parameter, before the first run trains
    if cfg.prune.params and cfg.prune.strategy not in names and env.main:
        print(
            f"[prunekit] prune.params are {cfg.prune.strategy}'s, which this comparison does not run; they are "
            "not used (give other strategies' parameters as prune.strategy_params.NAME.KEY)",
            file=sys.stderr,
        )
    results: list[RunResult] = []
    for name in names:
        sub = cfg.copy()
        sub.prune.params = {} if name in DENSE_NAMES else cfg.strategy_kwargs(name)
        sub.prune.strategy = name
        sub.run.out = out_dir
        sub.run.name = "dense" if name in DENSE_NAMES else name.replace(":", "-").replace("/", "-")
        try:
            res = run(sub)
        except Exception as e:  # one failing strategy must not lose the others' results
            err = f"{type(e).__name__}: {e}"
            res = RunResult(
                strategy=name,
                status="failed",
                error=err,
                dataset=cfg.data.name,
                model=cfg.model.name,
                seed=cfg.train.seed,
                epochs=cfg.train.epochs,
            )
            if env.main:
                failed_dir = os.path.join(out_dir, sub.run.name)
                os.makedirs(failed_dir, exist_ok=True)
                res.run_dir = failed_dir
                ckpt.write_text(os.path.join(failed_dir, "error.txt"), traceback.format_exc())
                ckpt.write_json(os.path.join(failed_dir, "result.json"), res.to_dict())
            print(f"[prunekit] strategy {name!r} failed: {err}", file=sys.stderr)
        results.append(res)
    dense_res = next((r for r in results if r.strategy in DENSE_NAMES and r.status == "ok"), None)
    if dense_res is not None:
        for r in results:
            r.dense_top1 = dense_res.top1
    if env.main:
        from .report import write_reports

        write_reports(results, out_dir)
    return results, out_dir


def check_run_model(spec: dict[str, Any], run_dir: str, trusted: Iterable[str] = ()) -> None:
    """Raise ValueError unless the model ``spec`` ({"name": ..., **kwargs} of ``build_model``) that the run
    directory ``run_dir`` names is safe to build: plain data, and a "package.module:factory" name only
    when trusted (torchvision, timm, prunekit, or named in ``trusted``; see ``prunekit.plan.check_factory``)."""
    try:
        check_factory(MODEL_FACTORY, spec, trusted, where=f"named by {run_dir}")
    except ValueError as e:
        raise ValueError(f"{e} (CLI: --plugins MODULE, or --trust-checkpoint to trust the run directory)") from None


def export_run(
    run_dir: str,
    out: str | None = None,
    torchscript: bool = False,
    trust_checkpoint: bool = False,
    trusted_factories: Iterable[str] = (),
) -> dict[str, str]:
    """Slim the model of ``run_dir``'s last checkpoint with its masks and write it as a pruning plan
    (``prunekit.load_pruned(path)`` rebuilds it), plus LOAD.md and optionally a TorchScript file.
    Returns {kind: path}. The plan is loaded back and checked against the slimmed model.

    The run directory is read as data, as in ``run(resume=...)``: ``trusted_factories`` and
    ``trust_checkpoint`` (which runs the code pickled in the checkpoint) mean the same there."""
    import prunekit as pk

    trusted_factories = list(trusted_factories)
    blob = ckpt.load_checkpoint(run_dir, trust=trust_checkpoint)
    if not trust_checkpoint:
        check_run_model(blob["model_spec"], run_dir, trusted_factories)
    spec = dict(blob["model_spec"])
    name = spec.pop("name")
    model = build_model(name, **spec)
    model.load_state_dict(blob["model"])
    model.eval()
    example = torch.zeros(1, spec["in_channels"], spec["input_size"], spec["input_size"])
    leaf_modules = resolve_leaf_modules(model, load_config_of(run_dir).model.leaf_modules)  # same graph as the run
    graph = pk.build_graph(model, example, leaf_modules=leaf_modules)
    keep = blob.get("keep") or graph.full_keep()
    small = pk.slim(model, graph, keep).eval()
    out = out or os.path.join(run_dir, "export", "model_pruned.pt")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    pk.save_pruned(out, small, graph, keep, factory=MODEL_FACTORY, factory_kwargs=blob["model_spec"])
    again = pk.load_pruned(out, trusted_factories=[*trusted_factories, name]).eval()
    with torch.no_grad():
        x = torch.randn(4, *example.shape[1:])
        diff = float((_logits(again(x)) - _logits(small(x))).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"export check failed: the reloaded plan differs from the slimmed model by {diff:.3g}")
    paths = {"plan": os.path.abspath(out)}
    if torchscript:
        ts = os.path.splitext(out)[0] + ".torchscript.pt"
        with torch.no_grad():
            torch.jit.trace(small, example).save(ts)
        paths["torchscript"] = os.path.abspath(ts)
    cfg = load_config_of(run_dir)
    done = (
        "finished" if blob["epoch"] >= cfg.train.epochs else f"UNFINISHED: epoch {blob['epoch']} of {cfg.train.epochs}"
    )
    kept = sum(int(torch.as_tensor(v).sum()) for v in keep.values())
    trust = f", trusted_factories=[{name!r}]" if ":" in name and not is_trusted_factory(name) else ""
    total = sum(g.size for g in graph.groups)
    text = f"""# Exported pruned model

From run `{os.path.abspath(run_dir)}` ({done}); model `{name}` {spec}; {kept}/{total} prunable channels kept;
{pk.count_params(small):,} parameters, {pk.count_macs(small, example):,} MACs per sample.

`{os.path.basename(out)}` is a *pruning plan*: the architecture's factory and arguments, the keep masks
and the slimmed weights. Loading rebuilds the dense architecture, slims it with the masks and loads
the weights:

```python
import prunekit
model = prunekit.load_pruned("{os.path.abspath(out)}"{trust})   # an nn.Module with the channels removed
model.eval()
# x: [N, {spec["in_channels"]}, {spec["input_size"]}, {spec["input_size"]}], normalized as in training
logits = model(x)
```
"""
    if torchscript:
        text += f"""
TorchScript (no prunekit needed): `torch.jit.load("{paths["torchscript"]}")`.
"""
    md = os.path.join(os.path.dirname(os.path.abspath(out)), "LOAD.md")
    ckpt.write_text(md, text)
    paths["instructions"] = md
    return paths


def load_config_of(run_dir: str) -> Config:
    """The resolved config a run directory was written with."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        return from_dict(yaml.safe_load(f))


__all__ = [
    "RunResult",
    "compare",
    "export_run",
    "load_pruned",
    "evaluate",
    "load_config_of",
    "lr_factor",
    "mask_digest",
    "measure_latency",
    "run",
]
