"""Statistics over the kept channels: the masked model's LayerNorm, one-group GroupNorm, and means or
variances over a channel dim, computed as the slimmed model computes them.

Zeroing a pruned channel is not enough where channels are mixed by a statistic: a LayerNorm over 8 channels
with 2 zeroed still divides by 8. For every statistics site (``StatSite``) the module whose forward makes the
call gets, while masks apply, a forward of its own: its forward traced alone by fx (its children kept
whole), with the site's call replaced by the masked version below, which reads the kept-channel mask from a
non-persistent buffer of that module. The forward is traced once per training mode, on first use.
``install``/``remove`` are called by ``prunekit.masks``; the slimmed model never has them.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
from torch import nn

from .graph import StatSite
from .trace import _Tracer

_FNS = "_pk_masked_forwards"  # instance attribute: {training mode: traced forward function}
_SITES = "_pk_stat_sites"


def install(module: nn.Module, site: StatSite, mask: torch.Tensor) -> None:
    """Make ``module`` compute ``site`` over the channels ``mask`` keeps (updates the mask if installed)."""
    mask = mask.to(device=_device_of(module), dtype=torch.bool)
    if site.buffer in module._buffers:
        module._buffers[site.buffer] = mask
    else:
        module.register_buffer(site.buffer, mask, persistent=False)
    sites = module.__dict__.setdefault(_SITES, {})
    if site.buffer not in sites:
        sites[site.buffer] = site
        module.__dict__[_FNS] = {}  # the sites changed: trace again
    module.__dict__["forward"] = types.MethodType(_masked_call, module)


def remove(module: nn.Module) -> None:
    """Give ``module`` its own forward back and drop its masks."""
    for name in list(module.__dict__.get(_SITES, {})):
        module._buffers.pop(name, None)
    for attr in ("forward", _FNS, _SITES):
        module.__dict__.pop(attr, None)


def installed(module: nn.Module) -> bool:
    return _SITES in module.__dict__


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _masked_call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    fns = self.__dict__[_FNS]
    fn = fns.get(self.training)
    if fn is None:
        fn = fns[self.training] = _trace_masked(self, self.__dict__[_SITES])
    return fn(self, *args, **kwargs)


def _trace_masked(module: nn.Module, sites: dict[str, StatSite]) -> Any:
    """``module``'s forward as a function of (self, *inputs), with each site's call made masked."""
    # trace the class's forward, not the masked one installed on the instance
    own = module.__dict__.pop("forward")
    try:
        tracer = _Tracer((), set(), all_children_leaves=True)
        graph = tracer.trace(module)
    finally:
        module.__dict__["forward"] = own
    want = {(s.key, s.ordinal): s for s in sites.values()}
    found = set()
    for node in list(graph.nodes):
        tag = node.meta.get("pk_site")
        if tag is None or tag[0] != "" or (tag[1], tag[2]) not in want:
            continue
        site = want[(tag[1], tag[2])]
        found.add((tag[1], tag[2]))
        with graph.inserting_before(node):
            mask = graph.get_attr(site.buffer)
            call = graph.call_function(
                _masked_op,
                (site.kind, site.key, site.dim, mask, node.args, node.kwargs),
            )
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    missing = set(want) - found
    if missing:
        raise RuntimeError(
            f"{type(module).__name__}: the statistics calls {sorted(missing)} found when the channel graph was "
            "built are not in a trace of the module alone; rebuild the graph for this model"
        )
    graph.lint()
    code = graph.python_code(root_module="self")
    scope = dict(code.globals)
    exec(compile(code.src, f"<prunekit masked {type(module).__name__}>", "exec"), scope)
    return scope["forward"]


def _masked_op(kind: str, key: str, cdim: int, mask: torch.Tensor, args: tuple, kwargs: dict) -> Any:
    x = args[0]
    if kind == "weight_std":  # F.batch_norm(w.reshape(1, out, in * k), ...): each filter over its kept inputs
        names = ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        a = {**dict(zip(names, args[1:])), **{k: v for k, v in kwargs.items() if k in names}}
        per_input = x.shape[2] // mask.shape[0]
        m = mask.repeat_interleave(per_input).view(1, 1, -1)
        w, b = a.get("weight"), a.get("bias")
        w = None if w is None else w.view(1, -1, 1)
        b = None if b is None else b.view(1, -1, 1)
        return _normalize(x, m, (2,), w, b, a.get("eps", 1e-5))
    shape = [1] * x.dim()
    shape[cdim] = mask.shape[0]
    m = mask.view(shape)
    if kind == "layer_norm":
        names = ("normalized_shape", "weight", "bias", "eps")
        a = {**dict(zip(names, args[1:])), **{k: v for k, v in kwargs.items() if k in names}}
        dims = tuple(range(x.dim() - len(a["normalized_shape"]), x.dim()))
        return _normalize(x, m, dims, a.get("weight"), a.get("bias"), a.get("eps", 1e-5))
    if kind == "group_norm":  # one group: over channels and positions
        names = ("num_groups", "weight", "bias", "eps")
        a = {**dict(zip(names, args[1:])), **{k: v for k, v in kwargs.items() if k in names}}
        w, b = a.get("weight"), a.get("bias")
        per_ch = [-1] + [1] * (x.dim() - 2)
        y = _normalize(x, m, tuple(range(1, x.dim())), None, None, a.get("eps", 1e-5))
        if w is not None:
            y = y * w.view(per_ch)
        if b is not None:
            y = y + b.view(per_ch)
        return y * m
    return _masked_reduce(key, x, m, args[1:], kwargs)


def _normalize(
    x: torch.Tensor, m: torch.Tensor, dims: tuple[int, ...], weight: Any, bias: Any, eps: float
) -> torch.Tensor:
    """Normalize ``x`` over ``dims`` with the statistics of the kept positions (``m`` broadcasts over ``x``);
    dropped positions come out zero."""
    mf = m.to(x.dtype)
    n = mf.sum() * math.prod(x.shape[d] for d in dims) / m.numel()
    mean = (x * mf).sum(dims, keepdim=True) / n
    var = (((x - mean) * mf) ** 2).sum(dims, keepdim=True) / n
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y * mf


def _masked_reduce(name: str, x: torch.Tensor, m: torch.Tensor, rest: tuple, kwargs: dict) -> Any:
    """The reduction ``name`` (torch.mean / Tensor.mean, ...: the same arguments after the input) over dims
    that include the channel dim, over the kept channels only."""
    fn = getattr(torch.Tensor, name, None)
    if name in ("sum", "norm"):
        return fn(x * m.to(x.dtype), *rest, **kwargs)
    if name in ("amax", "amin"):
        fill = float("-inf") if name == "amax" else float("inf")
        return fn(x.masked_fill(~m, fill), *rest, **kwargs)
    dim = kwargs.get("dim", rest[0] if rest else None)
    # positional: mean(dim, keepdim); var/std/var_mean(dim, unbiased, keepdim)
    k = 1 if name == "mean" else 2
    keepdim = bool(kwargs.get("keepdim", rest[k] if len(rest) > k else False))
    dims = tuple(d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim))
    mf = m.to(x.dtype)
    n = mf.sum() * math.prod(x.shape[d] for d in dims) / m.numel()
    mean = (x * mf).sum(dims, keepdim=True) / n
    if name == "mean":
        return mean if keepdim else mean.squeeze(dims)
    # var / std / var_mean: ``correction`` (or ``unbiased``) as PyTorch takes it
    if "correction" in kwargs:
        corr = kwargs["correction"]
    elif "unbiased" in kwargs:
        corr = int(kwargs["unbiased"])
    elif len(rest) > 1 and isinstance(rest[1], bool):
        corr = int(rest[1])
    else:
        corr = 1
    var = (((x - mean) * mf) ** 2).sum(dims, keepdim=True) / (n - corr)
    if not keepdim:
        var, mean = var.squeeze(dims), mean.squeeze(dims)
    if name == "var":
        return var
    if name == "std":
        return var.sqrt()
    return var, mean
