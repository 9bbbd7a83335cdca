"""MACs and parameter counts. MACs are counted at the ATen level (torch.utils.flop_counter) on a real
forward pass, so functional convolutions, matmuls and attention are included, not only nn.Conv/nn.Linear."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.graphs import as_inputs
from prunekit.graphs.trace import unwrap


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example_inputs`` (eval mode, no grad).

    Divide by the batch size of ``example_inputs`` for a per-sample figure."""
    model = unwrap(model)
    inputs = as_inputs(example_inputs)
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # nn.MultiheadAttention's inference fast path is one fused op the counter does not see
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    model = unwrap(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
