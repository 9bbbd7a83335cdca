"""Output shapes of the common CNN ops by formula, for the meta-device run that records every node's shape.

PyTorch's meta kernels for many of these ops are Python decompositions (an ``add`` or an adaptive pool costs
~0.5 ms on the meta device, a ``layer_norm`` 2 ms), which made shape recording the largest part of a graph
build. Each function here returns a meta tensor of the output's shape and dtype, or ``NotImplemented`` for
any case it does not cover exactly (an unusual argument, a shape that does not fit, a dtype promotion);
the caller then runs PyTorch's own kernel, which also gives the error message for inputs that do not fit.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NI = NotImplemented


def _meta(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def _is_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _tuple(v: Any, n: int) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


# -- modules ---------------------------------------------------------------------------------------------

# output has the input's shape and dtype (eval mode; a float input); rules.py passes their channels through
SAME_SHAPE_MODULES = {
    nn.Identity, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
    nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
}  # fmt: skip
_BATCH_NORMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}  # the input dims each takes
_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_ADAPTIVE = {
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}  # fmt: skip
_MAX_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}


def module(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The output of ``mod(*args, **kwargs)`` as a meta tensor, or NotImplemented. Exact types only: a
    subclass may override ``forward``."""
    if kwargs or len(args) != 1 or not _is_float(args[0]):
        return NI
    x, t = args[0], type(mod)
    if t in SAME_SHAPE_MODULES:
        return x
    if t in _BATCH_NORMS:
        ok = x.dim() in _BATCH_NORMS[t] and x.shape[1] == mod.num_features
        return x if ok else NI
    if t is nn.LayerNorm:
        ns = tuple(mod.normalized_shape)
        return x if tuple(x.shape[x.dim() - len(ns) :]) == ns else NI
    if t in _CONVS:
        return _conv(mod, x, _CONVS[t])
    if t is nn.Linear:
        w = mod.weight
        ok = x.dim() >= 1 and w.dim() == 2 and x.shape[-1] == w.shape[1] and x.dtype == w.dtype
        return _meta((*x.shape[:-1], w.shape[0]), x.dtype) if ok else NI
    if t in _ADAPTIVE:
        if getattr(mod, "return_indices", False):
            return NI
        return _adaptive(x, mod.output_size, _ADAPTIVE[t])
    if t in _MAX_POOLS:
        if mod.return_indices:
            return NI
        nd = _MAX_POOLS[t]
        return _pool(x, nd, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)
    if t in _AVG_POOLS:
        return _pool(x, _AVG_POOLS[t], mod.kernel_size, mod.stride, mod.padding, 1, mod.ceil_mode)
    return NI


def _conv(mod: nn.Module, x: torch.Tensor, nd: int) -> Any:
    w = mod.weight  # what the kernel reads (not the module's size attributes)
    if x.dim() != nd + 2 or w.dim() != nd + 2 or x.shape[1] != w.shape[1] * mod.groups or x.dtype != w.dtype:
        return NI  # unbatched input, or one that does not fit: PyTorch's kernel decides
    k, s, d = w.shape[2:], mod.stride, mod.dilation
    if mod.padding == "same":
        spatial = tuple(x.shape[2:])
    else:
        p = (0,) * nd if mod.padding == "valid" else mod.padding
        spatial = tuple((x.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd))
    if min(spatial) <= 0:
        return NI
    return _meta((x.shape[0], w.shape[0], *spatial), x.dtype)


def _adaptive(x: torch.Tensor, output_size: Any, nd: int) -> Any:
    if x.dim() not in (nd + 1, nd + 2) or 0 in x.shape[-nd:]:
        return NI
    if output_size is None or (nd == 1 and isinstance(output_size, (tuple, list)) and None in output_size):
        return NI  # PyTorch takes None for a dim only inside a tuple, and only in 2d/3d
    size = _tuple(output_size, nd)
    if len(size) != nd:
        return NI
    lead = x.dim() - nd
    out = tuple(x.shape[lead + i] if size[i] is None else size[i] for i in range(nd))
    if not all(isinstance(o, int) and o > 0 for o in out):
        return NI
    return _meta((*x.shape[:lead], *out), x.dtype)


def _pool(x: torch.Tensor, nd: int, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: bool) -> Any:
    if x.dim() not in (nd + 1, nd + 2):
        return NI
    k = _tuple(kernel, nd)
    s = _tuple(stride if stride is not None and stride != [] else kernel, nd)
    p, d = _tuple(padding, nd), _tuple(dilation, nd)
    if not (len(k) == len(s) == len(p) == len(d) == nd) or any(2 * p[i] > k[i] for i in range(nd)):
        return NI
    lead = x.dim() - nd
    out = []
    for i in range(nd):
        n = x.shape[lead + i]
        if n < d[i] * (k[i] - 1) + 1:
            return NI  # some kernels reject an input smaller than the window even when padding covers it
        o = (n + 2 * p[i] - d[i] * (k[i] - 1) - 1 + (s[i] - 1 if ceil else 0)) // s[i] + 1
        if ceil and (o - 1) * s[i] >= n + p[i]:  # the last window must start inside the input or left padding
            o -= 1
        if o <= 0:
            return NI
        out.append(o)
    return _meta((*x.shape[:lead], *out), x.dtype)


# -- functions -------------------------------------------------------------------------------------------

# functions whose output has the input's shape and dtype (rules.py: channel pass-through)
SAME_SHAPE_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid,
    torch.sigmoid, F.tanh, torch.tanh, F.leaky_relu, F.elu, F.selu, F.mish, F.softplus, F.hardtanh,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
}  # fmt: skip
_BINARY = {operator.add, operator.sub, operator.mul}
_INPLACE = {operator.iadd, operator.isub, operator.imul}  # the result must have the left operand's shape

try:  # torchvision's stochastic depth scales whole samples: the input's shape, channel-wise a pass-through
    from torchvision.ops import stochastic_depth as _sd

    SAME_SHAPE_FUNCTIONS.add(_sd)
except ImportError:  # pragma: no cover
    pass


def function(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The output of ``fn(*args, **kwargs)`` as a meta tensor, or NotImplemented."""
    if fn in SAME_SHAPE_FUNCTIONS:
        return args[0] if args and _is_float(args[0]) else NI
    if fn in _BINARY and len(args) == 2 and not kwargs:
        return _binary(*args)
    if fn in _INPLACE and len(args) == 2 and not kwargs and isinstance(args[0], torch.Tensor):
        out = _binary(*args)
        return out if out is NI or out.shape == args[0].shape else NI
    if fn is torch.cat:
        return _cat(args, kwargs)
    if fn is torch.flatten:
        return _flatten(args, kwargs)
    if fn is F.adaptive_avg_pool2d and len(args) == 2 and not kwargs and _is_float(args[0]):
        return _adaptive(args[0], args[1], 2)
    if fn is F.layer_norm and len(args) >= 2 and _is_float(args[0]):
        x, ns = args[0], tuple(_tuple(args[1], 1))
        w = args[2] if len(args) > 2 else kwargs.get("weight")
        if w is not None and (not isinstance(w, torch.Tensor) or tuple(w.shape) != ns):
            return NI
        return x if tuple(x.shape[x.dim() - len(ns) :]) == ns else NI
    return NI


def _binary(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or not a.is_floating_point():
            return NI
        if a.shape == b.shape:
            return a
        shape = _broadcast(tuple(a.shape), tuple(b.shape))
        if shape is None:
            return NI
        return a if shape == a.shape else _meta(shape, a.dtype)
    t, other = (a, b) if isinstance(a, torch.Tensor) else (b, a)
    if _is_float(t) and type(other) in (int, float):  # a Python number keeps a float tensor's dtype
        return t
    return NI


def _broadcast(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast shape of ``x`` and ``y``, or None when they do not broadcast (torch.broadcast_shapes
    costs 20 us a call)."""
    if len(x) < len(y):
        x, y = y, x
    y = (1,) * (len(x) - len(y)) + y
    out = []
    for p, q in zip(x, y):
        if p != q and p != 1 and q != 1:
            return None
        out.append(q if p == 1 else p)
    return tuple(out)


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if len(args) + len(kwargs) > 2 or not args or (kwargs and set(kwargs) != {"dim"}):
        return NI
    ts = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    if not isinstance(ts, (list, tuple)) or not ts or not isinstance(dim, int):
        return NI
    first = ts[0]
    if not all(isinstance(t, torch.Tensor) and t.dtype == first.dtype and t.dim() == first.dim() for t in ts):
        return NI
    nd = first.dim()
    if nd == 0 or not -nd <= dim < nd:
        return NI
    dim %= nd
    rest = [s for i, s in enumerate(first.shape) if i != dim]
    if any([s for i, s in enumerate(t.shape) if i != dim] != rest for t in ts):
        return NI
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in ts)
    return _meta(shape, first.dtype)


def _flatten(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args or not isinstance(args[0], torch.Tensor) or set(kwargs) - {"start_dim", "end_dim"}:
        return NI
    x = args[0]
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
    nd = x.dim()
    if nd == 0 or not (isinstance(start, int) and isinstance(end, int)):
        return NI
    if not (-nd <= start < nd and -nd <= end < nd):
        return NI
    start, end = start % nd, end % nd
    if start > end:
        return NI
    n = 1
    for s in x.shape[start : end + 1]:
        n *= s
    return _meta((*x.shape[:start], n, *x.shape[end + 1 :]), x.dtype)
