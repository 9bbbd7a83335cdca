"""Evaluation: top-1/top-5/loss over a split, and re-estimating BatchNorm statistics after a pruning event.

metrics = evaluate(model, test_stream, env, num_classes)     # {"test_loss", "top1"[, "top5"]}
recalibrate_bn(model, train_stream, epoch, batches=50, env=env)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import BatchStream
from .env import Env, all_reduce_sum, autocast, to_device


def logits(out: Any) -> torch.Tensor:
    """The logits tensor of a model's output (a tensor, an object with ``.logits``, or a tuple's first item)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}; the harness needs a logits tensor")


@torch.no_grad()
def evaluate(model: nn.Module, stream: BatchStream, env: Env, num_classes: int) -> dict[str, float]:
    """Top-1, top-5 (classes > 5) in percent and mean loss over the split (summed over DDP ranks)."""
    was = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1, top5, count
    for x, y in stream.epoch(0):
        x, y = to_device(x, y, env)
        with autocast(env):
            out = logits(model(x))
        sums[0] += float(F.cross_entropy(out.float(), y, reduction="sum"))
        k = min(5, num_classes)
        top = out.topk(k, dim=1).indices
        hit = top == y.view(-1, 1)
        sums[1] += float(hit[:, 0].sum())
        sums[2] += float(hit.any(dim=1).sum())
        sums[3] += len(y)
    sums = all_reduce_sum(sums, env)
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
            x, _ = to_device(x, y, env)
            with autocast(env):
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
