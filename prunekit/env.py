"""Where a run executes: the device, AMP and channels_last choice, the DDP rank and world, seeding, and the
few collective operations the harness needs (each a no-op on one process).

    env = make_env(cfg)                     # cfg.train.device/amp/channels_last; DDP when torchrun started us
    x, y = to_device(x, y, env)
    with autocast(env):
        out = model(x)
    sums = all_reduce_sum(sums, env)        # summed over the DDP ranks
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import Config, ConfigError


@dataclass
class Env:
    """The device and process layout of one run (rank 0 is the main process that writes files)."""

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


def init_distributed(device_pref: str) -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torchrun set WORLD_SIZE > 1, then the process group (nccl on CUDA,
    gloo on CPU) is initialized once."""
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
    """The Env for ``cfg.train`` (device auto/cpu/cuda/cuda:N, amp, channels_last) in this process."""
    t = cfg.train
    rank, world = init_distributed(t.device)
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
    cl = t.channels_last if t.channels_last is not None else True  # faster on CPU too: results/train_throughput.md
    return Env(device, rank, world, amp_dtype, cl)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch (all devices); ``deterministic`` also asks torch for deterministic kernels."""
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


def to_device(x: torch.Tensor, y: torch.Tensor, env: Env) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the run's device (channels_last when the run uses it)."""
    nb = env.device.type == "cuda"
    x = x.to(env.device, non_blocking=nb)
    if env.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(env.device, non_blocking=nb)


def autocast(env: Env) -> contextlib.AbstractContextManager[Any]:
    """The run's autocast context (a null context without AMP)."""
    if env.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(env.device.type, dtype=env.amp_dtype)


def all_reduce_sum(t: torch.Tensor, env: Env) -> torch.Tensor:
    """``t`` (a CPU tensor) summed over the DDP ranks, back on the CPU; ``t`` itself on one process."""
    if not env.distributed:
        return t
    import torch.distributed as dist

    t = t.to(env.device) if env.device.type == "cuda" else t
    dist.all_reduce(t)
    return t.cpu()


def broadcast_object(obj: Any, env: Env) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; ``obj`` itself on one process)."""
    if not env.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
