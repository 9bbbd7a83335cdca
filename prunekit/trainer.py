"""The training harness: one loop for every strategy.

    result = pk.run(cfg)                 # what `prunekit run` does; cfg: Config, mapping or YAML path
    result = pk.run(None, resume="runs/chex-digits-resnet20-...")   # continue an interrupted run

Per run: data and model from the config, the channel graph (``pk.build_graph``), the strategy from the
registry and a ``PruningController`` that keeps the masks during training; SGD/AdamW with a per-step
warm-up + cosine/step schedule (``optim``); evaluation every epoch (``evaluation``: top-1, top-5 when
classes > 5, loss); channels_last, and CUDA + AMP when a GPU is used, CPU otherwise; DDP when started by
torchrun, gloo on CPU (``env``). At the end the masked model is slimmed (``pk.slim``), measured (params,
MACs, latency beside the dense model: ``latency``) and written as a pruning plan (``pk.load_pruned``) in
the run directory (``rundir``). ``Trainer.fit`` is the whole job, top to bottom.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import logging.handlers
import math
import os
import shutil
import time
import traceback
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .config import Config, ConfigError, from_dict, load_config
from .data import BatchStream, build_data, input_spec
from .env import Env, all_reduce_sum, autocast, events_digest, make_env, mask_digest, seed_everything, to_device
from .evaluation import evaluate, logits, recalibrate_bn
from .graphs.trace import unwrap
from .latency import MIN_SECONDS, cpu_clock, time_models
from .models import build_model, check_model, resolve_leaf_modules
from .optim import build_optimizer, lr_factor
from .results import DENSE_NAMES, ERROR_FILE, RunResult
from .rundir import MODEL_FACTORY, check_run_model, make_run_dir, model_spec
from .runlog import Progress, RunLog

log = logging.getLogger("prunekit")

SMALL_MODEL_MACS = 10_000_000  # below this (per sample), CPU training uses 1 thread unless train.threads is set
STATE_KEYS = ("epoch", "batch", "step", "history", "best_top1", "train_seconds", "acc")  # the loop's position


class TrainingDiverged(RuntimeError):
    """The training loss (or the weights) stopped being finite: the run stops, its last checkpoint is kept."""


def resolve_config(config: Config | dict[str, Any] | str | None) -> Config:
    """A fresh Config from a Config (copied), a mapping, a YAML path, or None (the defaults)."""
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config.copy()
    if isinstance(config, dict):
        return from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(str(config))
    raise TypeError(f"run() takes a Config, a mapping or a YAML path, got {type(config).__name__}")


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


def make_controller(
    model: nn.Module, graph: Any, cfg: Config, steps_per_epoch: int, latency_timer: Any = None
) -> Any | None:
    """The PruningController for ``cfg.prune`` (None for dense training); ``latency_timer`` times the slimmed
    candidates of a latency budget (``prunekit.latency_budget.LatencyTimer``)."""
    if cfg.prune.strategy in DENSE_NAMES:
        return None
    from .controller import PruningController
    from .registry import get_strategy
    from .strategy import Budget

    strategy = get_strategy(cfg.prune.strategy, **cfg.strategy_kwargs())
    budget = Budget(**cfg.budget_kwargs())
    return PruningController(
        model, graph, strategy, budget, steps_per_epoch, cfg.train.epochs, seed=cfg.train.seed,
        latency_timer=latency_timer,
    )


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
        blob = None  # a run stopped before its first checkpoint starts again from the beginning
        if os.path.exists(os.path.join(resume, ckpt.CHECKPOINT)):
            blob = ckpt.load_checkpoint(resume, map_location="cpu", trust=trust_checkpoint)  # a refusal fails fast
            check_not_finished(resume, blob, cfg)
    else:
        cfg, blob = resolve_config(config), None
    cfg.budget_kwargs()
    check_strategies(cfg, [cfg.prune.strategy])  # a misspelt strategy or parameter fails before any work
    env = make_env(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    trainer = Trainer(cfg, env, None, blob, None)
    # data, model, graph, budget, optimizer, the strategy's first event: everything that can fail on what the
    # user asked for fails here, before a run directory exists; the log lines wait for the run's log
    early = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
    log.addHandler(early)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        trainer.prepare()
    finally:
        log.removeHandler(early)
        log.setLevel(level)
    run_dir = os.path.abspath(resume) if resume is not None else make_run_dir(cfg, env)
    trainer.run_dir = run_dir
    trainer.runlog = runlog = RunLog(run_dir, env, cfg.run.progress)
    remove = False
    try:
        restart = resume is not None and blob is None
        log.info("run dir %s%s", run_dir, " (no checkpoint: from the start)" if restart else "")
        for record in early.buffer:
            log.handle(record)
        return trainer.fit()
    except KeyboardInterrupt as e:
        e.run_dir = run_dir  # type: ignore[attr-defined]  # the CLI says how to resume
        raise
    except Exception:
        # a run that fails before its first checkpoint leaves nothing behind (a resumed one keeps its directory)
        remove = resume is None and env.main and not os.path.exists(os.path.join(run_dir, ckpt.CHECKPOINT))
        if env.main and not remove:  # one that keeps its directory says why it stopped (`prunekit report`)
            ckpt.write_text(os.path.join(run_dir, ERROR_FILE), traceback.format_exc())
        raise
    finally:
        runlog.close()
        if remove:
            shutil.rmtree(run_dir, ignore_errors=True)


def check_not_finished(run_dir: str, blob: dict[str, Any], cfg: Config) -> None:
    """A ValueError when ``run_dir`` finished (every epoch trained and result.json written): nothing to resume."""
    if blob.get("epoch", 0) >= cfg.train.epochs and os.path.exists(os.path.join(run_dir, "result.json")):
        raise ValueError(
            f"{run_dir} is finished ({cfg.train.epochs} of {cfg.train.epochs} epochs); nothing to resume. Its "
            f"results are in result.json (prunekit report {run_dir}), its model in model_pruned.pt"
        )


class Trainer:
    """One run: build everything, train epoch by epoch (evaluate, checkpoint), then slim, measure, write."""

    def __init__(
        self, cfg: Config, env: Env, run_dir: str | None, checkpoint: dict[str, Any] | None, runlog: RunLog | None
    ):
        self.cfg, self.env, self.run_dir, self.runlog = cfg, env, run_dir, runlog
        self.checkpoint, self.resuming = checkpoint, checkpoint is not None  # resuming from this loaded blob

    def prepare(self) -> None:
        """Everything before the first step; ``run`` calls it before it creates the run directory."""
        self._build_model()  # data, model, channel graph, dense MACs/params; on the device
        self._build_training()  # batch streams, optimizer, LR schedule, grad scaler, pruning controller, DDP

    # the whole job, top to bottom (after ``prepare``)
    def fit(self) -> RunResult:
        if self.env.main and not self.resuming:
            ckpt.write_text(os.path.join(self.run_dir, "config.yaml"), self.resolved_config().to_yaml())
        self._start_state()  # epoch/batch/step at 0, or where the checkpoint left off
        bar = self.runlog.rich and self.env.main and self.cfg.run.progress != "off"
        plain = not self.runlog.rich and self.env.main and self.cfg.run.progress != "off"
        every = self.cfg.run.log_seconds if plain else 0.0  # plain mode: a line at most every N seconds
        self.progress = Progress(bar, self.runlog.console, every)  # a rich bar on a terminal
        try:
            for epoch in range(self.state["epoch"], self.cfg.train.epochs):
                self._train_epoch(epoch)
                self._end_epoch(epoch)  # evaluate, log, metrics.csv, checkpoint
        finally:
            self.progress.close()
        return self._finish()  # slim, measure, write the plan and result.json

    def resolved_config(self) -> Config:
        """The config with what ``null``/``auto`` resolved to in this run (after ``prepare``): device, AMP,
        channels_last, CPU threads, image size, the default sparsity, the latency batch and the run name. Running
        it again gives the same run (``null`` stays where it means "all" or "none": data.limit_*, unused budgets)."""
        cfg, env = self.cfg.copy(), self.env
        t, p = cfg.train, cfg.prune
        if t.device == "auto":
            t.device = env.device.type  # "cuda", not "cuda:0": under DDP each rank takes its LOCAL_RANK
        if t.amp == "auto":
            t.amp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(env.amp_dtype, "off")  # type: ignore[arg-type]
        if t.channels_last is None:
            t.channels_last = env.channels_last
        if t.threads is None:
            t.threads = torch.get_num_threads()
        if cfg.data.image_size is None:
            cfg.data.image_size = self.data.input_size
        if p.sparsity is None and p.macs is None and p.latency is None:
            p.sparsity = 0.5
        if p.latency_batch is None:
            p.latency_batch = cfg.run.latency_batch
        if cfg.run.name is None and self.run_dir:
            cfg.run.name = os.path.basename(self.run_dir)
        return cfg

    # setup
    def _build_model(self) -> None:
        cfg, env = self.cfg, self.env
        import prunekit as pk

        self.data = data = build_data(cfg.data)
        self.input = input_spec(data)  # how inputs are made: result.json, the checkpoint, the plan
        model = build_model(cfg.model.name, data.num_classes, data.in_channels, data.input_size, **cfg.model.kwargs)
        leaf_modules = resolve_leaf_modules(model, cfg.model.leaf_modules)
        check_model(model, data.in_channels, data.input_size, data.num_classes, cfg.model.name)
        self.example = torch.zeros(1, data.in_channels, data.input_size, data.input_size)
        t0 = time.perf_counter()
        self.graph = pk.build_graph(model, self.example, leaf_modules=leaf_modules)
        log.info(
            "%s on %s: %s (built in %.1fs); device %s%s",
            cfg.model.name,
            data.name,
            self.graph,
            time.perf_counter() - t0,
            env.device,
            f", {env.world} DDP ranks" if env.distributed else "",
        )
        self.dense_macs = pk.count_macs(model, self.example)
        self.dense_params = pk.count_params(model)
        if cfg.train.threads is None and env.device.type == "cpu" and self.dense_macs < SMALL_MODEL_MACS:
            # intra-op threads do not pay for tiny convolutions, and on a busy machine OpenMP threads
            # waiting on each other make a step many times slower (measured: 0.06 s vs 0.4-1.9 s per step)
            torch.set_num_threads(1)
            log.info(
                "small model (%s MACs per sample) on CPU: 1 torch thread (set train.threads to override)",
                f"{self.dense_macs:,}",
            )
        model.to(env.device)
        if env.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model

    def _build_training(self) -> None:
        cfg, env, t, model = self.cfg, self.env, self.cfg.train, self.model
        self.train_stream = BatchStream(
            self.data.train, t.batch_size, True, t.seed, env.rank, env.world, cfg.data.workers
        )
        self.test_stream = BatchStream(
            self.data.test, t.eval_batch_size, False, t.seed, env.rank, env.world, cfg.data.workers
        )
        self.steps_per_epoch = spe = len(self.train_stream)
        self.spec = model_spec(cfg, self.data)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg, spe))
        self.scaler = torch.amp.GradScaler("cuda", enabled=env.amp_dtype == torch.float16)
        self.controller = make_controller(model, self.graph, cfg, spe, self._latency_timer())
        if self.controller is not None:
            self.controller.start(self.optimizer, resuming=self.resuming)  # resuming: the checkpoint has the masks
        self.net: nn.Module = model  # what the loop calls: the model, or its DDP wrapper
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        # what training steps call: ``net``, or with train.compile its torch.compile'd version (same parameters:
        # the controller's in-place masks and events reach it; evaluation and BN recalibration stay eager)
        self.train_net: nn.Module = torch.compile(self.net) if cfg.train.compile else self.net
        self.crit = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

    def _start_state(self) -> None:
        # acc: this epoch's summed train loss, correct predictions and samples so far
        self.state: dict[str, Any] = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "history": [],
            "best_top1": None,
            "train_seconds": 0.0,
            "acc": [0.0, 0.0, 0],
        }
        if self.resuming:
            self.state = self._load()
            s = self.state
            log.info("resumed at epoch %d batch %d (step %d)", s["epoch"] + 1, s["batch"], s["step"])

    # training
    def _train_epoch(self, epoch: int) -> None:
        """The training steps of one epoch, from the checkpoint's batch when resuming mid-epoch."""
        cfg, env, state = self.cfg, self.env, self.state
        optimizer, scaler, controller = self.optimizer, self.scaler, self.controller
        spe = self.steps_per_epoch
        start = state["batch"] if epoch == state["epoch"] else 0
        if start == 0:
            state["acc"] = [0.0, 0.0, 0]
        t_epoch = time.perf_counter()
        self.progress.epoch(f"epoch {epoch + 1}/{cfg.train.epochs}", spe, start)
        self.net.train()
        for b, (x, y) in enumerate(self.train_stream.epoch(epoch, start), start=start):
            x, y = to_device(x, y, env)
            with autocast(env):
                out = logits(self.train_net(x))
                loss = self.crit(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if controller is not None:
                controller.after_backward()  # no gradient into pruned channels
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())  # the one sync of a step (the running loss needs it anyway)
            if not math.isfinite(value):
                raise self._diverged(epoch, state["step"] + 1, f"loss {value}")
            if controller is not None:
                try:
                    controller.after_optimizer_step()  # masks re-applied; a pruning event when one is due
                except FloatingPointError as e:  # the event met weights that are no longer finite
                    raise self._diverged(epoch, state["step"] + 1, "weights no longer finite") from e
            self.scheduler.step()
            state["step"] += 1
            state["batch"] = b + 1
            acc = state["acc"]
            acc[0] += value * len(y)
            acc[1] += float((out.detach().argmax(1) == y).sum())
            acc[2] += len(y)
            self.progress.advance(f"loss {acc[0] / max(1, acc[2]):.4f}")
            if cfg.run.log_every and state["step"] % cfg.run.log_every == 0:
                log.info(
                    "epoch %d step %d loss %.4f lr %.4g",
                    epoch + 1,
                    state["step"],
                    acc[0] / max(1, acc[2]),
                    optimizer.param_groups[0]["lr"],
                )
            if cfg.run.checkpoint_steps and b + 1 < spe and (b + 1) % cfg.run.checkpoint_steps == 0:
                state["epoch"] = epoch  # a mid-epoch checkpoint
                state["train_seconds"] += time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
                self._save()
        state["train_seconds"] += time.perf_counter() - t_epoch

    def _diverged(self, epoch: int, step: int, what: str) -> TrainingDiverged:
        """The one-line error of a non-finite loss at optimizer step ``step`` (1-based) of ``epoch`` (0-based);
        the last checkpoint stays as it is."""
        kept = ""
        if self.run_dir and os.path.exists(os.path.join(self.run_dir, ckpt.CHECKPOINT)):
            kept = f"; the checkpoint before it is kept ({self.run_dir})"
        return TrainingDiverged(
            f"training diverged at step {step} (epoch {epoch + 1}): {what}; lower the learning rate "
            f"(--lr, now {self.cfg.train.lr:g}){kept}"
        )

    def _end_epoch(self, epoch: int) -> None:
        state = self.state
        row = self._epoch_row(epoch)
        state["history"].append(row)
        if state["best_top1"] is None or row["top1"] > state["best_top1"]:
            state["best_top1"] = row["top1"]
        state.update(epoch=epoch + 1, batch=0)
        self._log_epoch(row)
        if self.env.main:
            ckpt.write_csv(os.path.join(self.run_dir, "metrics.csv"), state["history"])
        self._save()

    def _epoch_row(self, epoch: int) -> dict[str, Any]:
        """The epoch's metrics.csv row: train loss/top-1 (over all ranks), evaluation, channels, MACs, times."""
        env, state, controller, graph = self.env, self.state, self.controller, self.graph
        acc = all_reduce_sum(torch.tensor(state["acc"][:2] + [float(state["acc"][2])], dtype=torch.float64), env)
        n = max(1.0, float(acc[2]))
        recalibrated = 0
        last_eval = state["history"][-1]["step"] if state["history"] else 0
        if controller is not None and any(last_eval < e["step"] for e in controller.events if e["step"] > 0):
            recalibrated = recalibrate_bn(
                unwrap(self.net), self.train_stream, epoch, self.cfg.train.bn_recalibration, env
            )
        ev = evaluate(self.net, self.test_stream, env, self.data.num_classes)
        keep = controller.keep if controller is not None else graph.full_keep()
        return {
            "epoch": epoch + 1,
            "step": state["step"],
            "lr": self.optimizer.param_groups[0]["lr"],
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
    def _save(self) -> None:
        if not self.env.main:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            s = self.state  # never checkpoint them; at an epoch end ``epoch`` already counts the one that ended
            raise self._diverged(s["epoch"] - (s["batch"] == 0), s["step"], "weights no longer finite")
        controller = self.controller
        blob = {
            "format": ckpt.FORMAT,
            **copy.deepcopy({k: self.state[k] for k in STATE_KEYS}),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "controller": controller.state_dict() if controller is not None else None,
            "rng": ckpt.rng_state(),
            "keep": {k: v.cpu() for k, v in (controller.keep if controller is not None else {}).items()},
            "model_spec": self.spec,
            "input": self.input,
            "steps_per_epoch": self.steps_per_epoch,
        }
        ckpt.save_checkpoint(self.run_dir, blob)

    def _load(self) -> dict[str, Any]:
        blob, self.checkpoint = self.checkpoint, None  # loaded (and checked) by run(); not kept after this
        assert blob is not None
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        if self.controller is not None:
            if blob.get("controller") is None:
                raise ValueError(f"{self.run_dir}: the checkpoint has no controller state but the config prunes")
            self.controller.load_state_dict(blob["controller"])
        ckpt.set_rng_state(blob["rng"])
        return {k: blob[k] for k in STATE_KEYS}

    # the end: slim, measure, write
    def _finish(self) -> RunResult:
        import prunekit as pk

        cfg, env, data, graph, controller = self.cfg, self.env, self.data, self.graph, self.controller
        keep = {k: v.cpu() for k, v in (controller.keep if controller is not None else graph.full_keep()).items()}
        events = list(controller.events) if controller is not None else []
        res = self._result(keep, events)
        if env.distributed:
            res.ddp = self._compare_ranks(keep, events)
        if not env.main:
            return res

        bare = self.model.cpu().float().to(memory_format=torch.contiguous_format)
        bare.eval()
        small = pk.slim(bare, graph, keep)
        res.params = pk.count_params(small)
        res.macs = pk.count_macs(small, self.example)
        res.macs_reduction = 1.0 - res.macs / self.dense_macs if self.dense_macs else None
        x, _ = next(iter(self.test_stream.epoch(0)))
        with torch.no_grad():
            res.slim_max_abs_diff = float((logits(small(x[:16])) - logits(bare(x[:16]))).abs().max())
        self._measure_latency(res, small, bare)
        self._measure_latency_budget(res, small, bare)

        pk.save_pruned(
            os.path.join(self.run_dir, "model_pruned.pt"),
            small,
            graph,
            keep,
            factory=MODEL_FACTORY,
            factory_kwargs=model_spec(cfg, data),
            input_spec=self.input,
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
            f"{self.dense_macs:,}",
            f"{res.macs:,}",
            100 * (res.macs_reduction or 0),
            f"{self.dense_params:,}",
            f"{res.params:,}",
            res.dense_latency_ms,
            res.latency_ms,
            res.speedup or 0,
            res.train_seconds or 0,
            res.event_seconds or 0,
        )
        return res

    def _result(self, keep: dict[str, torch.Tensor], events: list[dict[str, Any]]) -> RunResult:
        """The RunResult of the training (the slimmed model's figures are filled in by ``_finish``)."""
        cfg, state, graph, controller = self.cfg, self.state, self.graph, self.controller
        last = state["history"][-1] if state["history"] else {}
        return RunResult(
            strategy=cfg.prune.strategy,
            run_dir=self.run_dir,
            dataset=self.data.name,
            model=cfg.model.name,
            seed=cfg.train.seed,
            epochs=cfg.train.epochs,
            device=str(self.env.device),
            world_size=self.env.world,
            top1=last.get("top1"),
            top5=last.get("top5"),
            loss=last.get("test_loss"),
            best_top1=state["best_top1"],
            dense_params=self.dense_params,
            dense_macs=self.dense_macs,
            train_seconds=state["train_seconds"],
            event_seconds=float(controller.event_seconds) if controller is not None else 0.0,
            num_events=len(events),
            kept={g.id: int(keep[g.id].sum()) if g.id in keep else g.size for g in graph.groups},
            group_sizes={g.id: g.size for g in graph.groups},
            input=self.input,
        )

    def _compare_ranks(self, keep: dict[str, torch.Tensor], events: list[dict[str, Any]]) -> dict[str, Any]:
        """Every DDP rank's mask and event digests: the masks must be identical on every rank."""
        import torch.distributed as dist

        env = self.env
        mine = {"masks": mask_digest(keep), "events": events_digest(events)}
        everyone: list[Any] = [None] * env.world
        dist.all_gather_object(everyone, mine)
        return {
            "world_size": env.world,
            "mask_digests": [e["masks"] for e in everyone],
            "event_digests": [e["events"] for e in everyone],
            "masks_identical": len({e["masks"] for e in everyone}) == 1,
            "events_identical": len({e["events"] for e in everyone}) == 1,
        }

    def _latency_timer(self) -> Any:
        """The timer of a latency budget (prune.latency): batches of ``latency_batch`` on the run's device."""
        cfg, data = self.cfg, self.data
        if cfg.prune.latency is None or cfg.prune.strategy in DENSE_NAMES:
            return None
        from .latency_budget import LatencyTimer

        batch = self.latency_budget_batch()
        return LatencyTimer(self.env, torch.zeros(batch, data.in_channels, data.input_size, data.input_size))

    def latency_budget_batch(self) -> int:
        """The batch size a latency budget is timed at: prune.latency_batch, else run.latency_batch."""
        p = self.cfg.prune
        return p.latency_batch if p.latency_batch is not None else self.cfg.run.latency_batch

    def _measure_latency_budget(self, res: RunResult, small: nn.Module, dense: nn.Module) -> None:
        """A latency budget's target and what the slimmed model achieves, timed at the budget's batch size
        on the run's device (again, now that training is over: the figures the result table shows)."""
        cfg, env, data, controller = self.cfg, self.env, self.data, self.controller
        res.round_to = controller.round_to if controller is not None else None
        if cfg.prune.latency is None or controller is None:
            return
        batch = self.latency_budget_batch()
        if batch == cfg.run.latency_batch and res.speedup and res.dense_latency_ms:
            dense_ms, ratio = res.dense_latency_ms, 1.0 / res.speedup  # speedup: median of paired dense/slimmed
        else:
            x = torch.zeros(batch, data.in_channels, data.input_size, data.input_size)
            models = [copy.deepcopy(m).to(env.device) for m in (small, dense)]
            if env.channels_last:
                models = [m.to(memory_format=torch.channels_last) for m in models]
            clock, clock_name = cpu_clock(env)  # as _measure_latency
            stats = time_models(
                models, x, env, runs=cfg.run.latency_runs, min_seconds=MIN_SECONDS, clock=clock, clock_name=clock_name
            )
            dense_ms, ratio = stats.ms[1], stats.ratio(0, 1)
        # in ms against the dense model's median: the paired ratio cancels a slow stretch of the machine
        ms = ratio * dense_ms
        res.latency_target = cfg.prune.latency
        res.latency_target_ms = cfg.prune.latency * dense_ms
        res.latency_achieved_ms = ms
        res.latency_achieved = ratio
        res.latency_budget_batch = batch
        log.info(
            "latency budget %.3g at batch %d on %s: target %.3f ms, achieved %.3f ms (%.3f of dense, %+.1f%%)",
            cfg.prune.latency, batch, env.device, res.latency_target_ms, ms, ratio,
            100 * (ratio / cfg.prune.latency - 1),
        )

    def _measure_latency(self, res: RunResult, small: nn.Module, dense: nn.Module) -> None:
        """Latency of the slimmed and the dense model on the run's device, batch ``run.latency_batch``."""
        cfg, env, data = self.cfg, self.env, self.data
        lat_x = torch.zeros(cfg.run.latency_batch, data.in_channels, data.input_size, data.input_size)
        small_d = copy.deepcopy(small).to(env.device)
        dense_d = copy.deepcopy(dense).to(env.device)
        if env.channels_last:
            small_d.to(memory_format=torch.channels_last)
            dense_d.to(memory_format=torch.channels_last)
        clock, clock_name = cpu_clock(env)  # CPU time on one CPU thread: waiting for a core does not count
        stats = time_models(
            [small_d, dense_d], lat_x, env, runs=cfg.run.latency_runs, min_seconds=MIN_SECONDS, clock=clock,
            clock_name=clock_name,
        )  # fmt: skip
        res.latency_ms, res.dense_latency_ms = stats.ms
        res.speedup = stats.ratio(1, 0)  # median of the paired dense/slimmed ratios of the rounds
        res.latency_batch = cfg.run.latency_batch
        res.latency_method = stats.describe()
