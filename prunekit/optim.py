"""The optimizer and the learning-rate schedule, from ``cfg.train``.

optimizer = build_optimizer(model, cfg)           # SGD (momentum, nesterov) or AdamW
scheduler = LambdaLR(optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch))   # stepped once per batch
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import Config


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
