"""The shape formulas of the meta-device recording (prunekit.graphs.shapes) against PyTorch's own kernels.

A formula may decline (NotImplemented: PyTorch's kernel then runs), but when it answers, the shape and
dtype must be what PyTorch computes, and an input PyTorch rejects must never get an answer.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunekit.graphs import shapes
from torch import nn


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _agree(fast, compute) -> None:
    """``fast`` (the formula's answer) agrees with ``compute()`` (PyTorch on real tensors)."""
    try:
        want = compute()
    except (RuntimeError, ValueError, IndexError, TypeError):
        assert fast is NotImplemented, f"PyTorch rejects this input but the formula gave {fast}"
        return
    if fast is NotImplemented:
        return
    assert fast.device.type == "meta"
    assert tuple(fast.shape) == tuple(want.shape) and fast.dtype == want.dtype


def _module(mod: nn.Module, x: torch.Tensor) -> None:
    mod.eval()
    with torch.no_grad():
        _agree(shapes.module(mod, (_meta(x),), {}), lambda: mod(x))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=150, deadline=None)
@given(
    nd=st.sampled_from([1, 2, 3]),
    cin=st.integers(1, 6),
    cout=st.integers(1, 6),
    groups=st.sampled_from([1, 2, 3]),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.one_of(st.integers(0, 3), st.sampled_from(["same", "valid"])),
    dilation=st.integers(1, 2),
    size=st.integers(1, 9),
    cin_seen=st.integers(1, 7),
    batched=st.booleans(),
)
def test_conv(nd, cin, cout, groups, k, stride, padding, dilation, size, cin_seen, batched):
    cin, cout = cin * groups, cout * groups
    if padding == "same":
        stride = 1
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd](
        cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    shape = ((2,) if batched else ()) + (cin_seen,) + (size,) * nd
    _module(conv, torch.zeros(shape))


@settings(max_examples=150, deadline=None)
@given(
    nd=st.sampled_from([1, 2, 3]),
    kind=st.sampled_from(["max", "avg"]),
    k=st.integers(1, 4),
    stride=st.one_of(st.none(), st.integers(1, 3)),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    ceil=st.booleans(),
    size=st.integers(1, 9),
    batched=st.booleans(),
)
def test_pool(nd, kind, k, stride, padding, dilation, ceil, size, batched):
    if kind == "max":
        pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[nd](
            k, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil
        )
    else:
        avg = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[nd]
        pool = avg(k, stride=stride, padding=padding, ceil_mode=ceil)
    shape = ((2,) if batched else ()) + (3,) + (size,) * nd
    _module(pool, torch.zeros(shape))


@settings(max_examples=80, deadline=None)
@given(
    nd=st.sampled_from([1, 2, 3]),
    kind=st.sampled_from(["avg", "max"]),
    out=st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=1, max_size=3),
    size=st.integers(0, 7),
    batched=st.booleans(),
)
def test_adaptive_pool(nd, kind, out, size, batched):
    out = out[0] if len(out) == 1 else tuple(out)
    cls = {("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d, ("avg", 3): nn.AdaptiveAvgPool3d}
    cls.update({("max", 1): nn.AdaptiveMaxPool1d, ("max", 2): nn.AdaptiveMaxPool2d, ("max", 3): nn.AdaptiveMaxPool3d})
    try:
        pool = cls[(kind, nd)](out)
    except (TypeError, ValueError):
        return
    shape = ((2,) if batched else ()) + (3,) + (size,) * nd
    _module(pool, torch.zeros(shape))


@pytest.mark.parametrize(
    "mod, shape",
    [
        (nn.Linear(4, 3), (2, 4)),
        (nn.Linear(4, 3), (2, 5, 4)),
        (nn.Linear(4, 3), (4,)),
        (nn.Linear(4, 3), (2, 3)),
        (nn.BatchNorm2d(3), (2, 3, 4, 4)),
        (nn.BatchNorm2d(3), (2, 3, 4)),
        (nn.BatchNorm2d(3), (2, 4, 4, 4)),
        (nn.BatchNorm1d(3), (2, 3)),
        (nn.BatchNorm1d(3), (2, 3, 5)),
        (nn.BatchNorm3d(3), (2, 3, 2, 2, 2)),
        (nn.LayerNorm(4), (2, 3, 4)),
        (nn.LayerNorm(4), (2, 4, 3)),
        (nn.LayerNorm([3, 4]), (2, 3, 4)),
        (nn.ReLU(), (2, 3)),
        (nn.Conv2d(3, 4, 3).double(), (1, 3, 5, 5)),  # dtype mismatch: PyTorch rejects float input
    ],
)
def test_other_modules(mod, shape):
    _module(mod, torch.zeros(shape))


SHAPES = st.lists(st.integers(1, 3), min_size=0, max_size=4).map(tuple)


@settings(max_examples=150, deadline=None)
@given(
    a=SHAPES,
    b=SHAPES,
    op=st.sampled_from([operator.add, operator.mul, operator.sub, operator.iadd]),
    dtypes=st.sampled_from([(torch.float32, torch.float32), (torch.float32, torch.float64), (torch.int64,) * 2]),
)
def test_binary(a, b, op, dtypes):
    x, y = torch.zeros(a, dtype=dtypes[0]), torch.zeros(b, dtype=dtypes[1])
    _agree(shapes.function(op, (_meta(x), _meta(y)), {}), lambda: op(x.clone(), y))
    _agree(shapes.function(op, (_meta(x), 2.0), {}), lambda: op(x.clone(), 2.0))
    _agree(shapes.function(op, (3, _meta(y)), {}), lambda: op(3, y.clone()))


@settings(max_examples=150, deadline=None)
@given(
    shapes_=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3),
    dim=st.integers(-4, 3),
)
def test_cat(shapes_, dim):
    ts = [torch.zeros(s) for s in shapes_]
    _agree(shapes.function(torch.cat, ([_meta(t) for t in ts], dim), {}), lambda: torch.cat(ts, dim))
    _agree(shapes.function(torch.cat, ([_meta(t) for t in ts],), {"dim": dim}), lambda: torch.cat(ts, dim=dim))


@settings(max_examples=100, deadline=None)
@given(shape=SHAPES, start=st.integers(-5, 4), end=st.integers(-5, 4))
def test_flatten(shape, start, end):
    x = torch.zeros(shape)
    _agree(shapes.function(torch.flatten, (_meta(x), start, end), {}), lambda: torch.flatten(x, start, end))
    _agree(shapes.function(torch.flatten, (_meta(x),), {"start_dim": start}), lambda: torch.flatten(x, start_dim=start))


@pytest.mark.parametrize(
    "fn, args",
    [
        (F.relu, (torch.zeros(2, 3),)),
        (F.relu, (torch.zeros(2, 3, dtype=torch.int64),)),
        (torch.sigmoid, (torch.zeros(2, 3),)),
        (F.layer_norm, (torch.zeros(2, 3, 4), (4,))),
        (F.layer_norm, (torch.zeros(2, 3, 4), (3,))),
        (F.layer_norm, (torch.zeros(2, 3, 4), (4,), torch.ones(4), torch.zeros(4))),
        (F.layer_norm, (torch.zeros(2, 3, 4), (4,), torch.ones(3))),
        (F.adaptive_avg_pool2d, (torch.zeros(1, 3, 5, 5), 2)),
        (F.adaptive_avg_pool2d, (torch.zeros(1, 3, 5, 5), (None, 2))),
    ],
)
def test_other_functions(fn, args):
    meta = tuple(_meta(a) if isinstance(a, torch.Tensor) else a for a in args)
    _agree(shapes.function(fn, meta, {}), lambda: fn(*args))
