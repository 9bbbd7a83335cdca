"""The shape formulas of the meta-device recording (prunekit.graphs.shapes) against PyTorch's own kernels.

A formula may decline (NotImplemented: PyTorch's kernel then runs), but when it answers, the shape and
dtype must be what PyTorch computes, and an input PyTorch rejects must never get an answer. Declining
everything would pass those two rules, so each test also counts: of the examples inside the range its
formula is written for (batched float input that fits the layer, ...) and that PyTorch accepts, at least
MOST of them must get an answer, and enough of them must have been drawn.
"""

from __future__ import annotations

import operator
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from prunekit.graphs import shapes
from torch import nn

MOST = 0.9  # fraction of accepted in-range examples that must get an answer
ENOUGH = 20  # accepted in-range examples a property test must see


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


class Tally:
    """Checks each of a test's examples (``agree``) and counts the outcomes, so that the test can require
    that its formula answered most of the in-range inputs (``assert_mostly_answered``)."""

    def __init__(self) -> None:
        self.n: Counter[str] = Counter()

    def agree(self, fast, compute, in_range: bool = True) -> str:
        """``fast`` (the formula's answer) agrees with ``compute()`` (PyTorch on real tensors); returns
        "rejected" (PyTorch raised), "declined" or "answered"."""
        try:
            want = compute()
        except (RuntimeError, ValueError, IndexError, TypeError):
            assert fast is NotImplemented, f"PyTorch rejects this input but the formula gave {fast}"
            outcome = "rejected"
        else:
            if fast is NotImplemented:
                outcome = "declined"
            else:
                assert fast.device.type == "meta"
                assert tuple(fast.shape) == tuple(want.shape) and fast.dtype == want.dtype
                outcome = "answered"
        self.n[outcome + (" in range" if in_range else "")] += 1
        return outcome

    def assert_mostly_answered(self, most: float = MOST, enough: int = ENOUGH) -> None:
        answered, declined = self.n["answered in range"], self.n["declined in range"]
        assert answered + declined >= enough, f"too few accepted in-range examples: {dict(self.n)}"
        assert answered >= most * (answered + declined), f"the formula declined too often: {dict(self.n)}"


def _agree(fast, compute) -> str:
    return Tally().agree(fast, compute)


def _module(tally: Tally, mod: nn.Module, x: torch.Tensor, in_range: bool = True) -> str:
    mod.eval()
    with torch.no_grad():
        return tally.agree(shapes.module(mod, (_meta(x),), {}), lambda: mod(x), in_range)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv():
    tally = Tally()

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
        fits=st.sampled_from([True, True, False]),
        cin_seen=st.integers(1, 7),
        batched=st.sampled_from([True, True, False]),
    )
    def check(nd, cin, cout, groups, k, stride, padding, dilation, size, fits, cin_seen, batched):
        cin, cout = cin * groups, cout * groups
        cin_seen = cin if fits else cin_seen  # mostly inputs that fit the layer, some that may not
        if padding == "same":
            stride = 1
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd](
            cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups
        )
        shape = ((2,) if batched else ()) + (cin_seen,) + (size,) * nd
        _module(tally, conv, torch.zeros(shape), in_range=batched and cin_seen == cin)

    check()
    tally.assert_mostly_answered()


def test_pool():
    tally = Tally()

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
    def check(nd, kind, k, stride, padding, dilation, ceil, size, batched):
        if kind == "max":
            pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[nd](
                k, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil
            )
        else:
            avg = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[nd]
            pool = avg(k, stride=stride, padding=padding, ceil_mode=ceil)
            dilation = 1
        shape = ((2,) if batched else ()) + (3,) + (size,) * nd
        # the formula declines a window larger than the input even where padding covers it
        _module(tally, pool, torch.zeros(shape), in_range=size >= dilation * (k - 1) + 1)

    check()
    tally.assert_mostly_answered()


def test_adaptive_pool():
    tally = Tally()

    @settings(max_examples=150, deadline=None)
    @given(
        nd=st.sampled_from([1, 2, 3]),
        kind=st.sampled_from(["avg", "max"]),
        out=st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=1, max_size=3),
        size=st.integers(0, 7),
        batched=st.booleans(),
    )
    def check(nd, kind, out, size, batched):
        out = out[0] if len(out) == 1 else tuple(out)
        cls = {("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d, ("avg", 3): nn.AdaptiveAvgPool3d}
        cls.update(
            {("max", 1): nn.AdaptiveMaxPool1d, ("max", 2): nn.AdaptiveMaxPool2d, ("max", 3): nn.AdaptiveMaxPool3d}
        )
        try:
            pool = cls[(kind, nd)](out)
        except (TypeError, ValueError):
            return
        shape = ((2,) if batched else ()) + (3,) + (size,) * nd
        _module(tally, pool, torch.zeros(shape), in_range=size > 0)

    check()
    tally.assert_mostly_answered()


@pytest.mark.parametrize(
    "mod, shape, answers",
    [
        (nn.Linear(4, 3), (2, 4), True),
        (nn.Linear(4, 3), (2, 5, 4), True),
        (nn.Linear(4, 3), (4,), True),
        (nn.Linear(4, 3), (2, 3), False),
        (nn.BatchNorm2d(3), (2, 3, 4, 4), True),
        (nn.BatchNorm2d(3), (2, 3, 4), False),
        (nn.BatchNorm2d(3), (2, 4, 4, 4), False),
        (nn.BatchNorm1d(3), (2, 3), True),
        (nn.BatchNorm1d(3), (2, 3, 5), True),
        (nn.BatchNorm3d(3), (2, 3, 2, 2, 2), True),
        (nn.LayerNorm(4), (2, 3, 4), True),
        (nn.LayerNorm(4), (2, 4, 3), False),
        (nn.LayerNorm([3, 4]), (2, 3, 4), True),
        (nn.ReLU(), (2, 3), True),
        (nn.Conv2d(3, 4, 3).double(), (1, 3, 5, 5), False),  # dtype mismatch: PyTorch rejects float input
    ],
)
def test_other_modules(mod, shape, answers):
    """``answers``: the formula gives the shape (False: PyTorch rejects the input, so it must decline)."""
    outcome = _module(Tally(), mod, torch.zeros(shape))
    assert outcome == ("answered" if answers else "rejected")


SHAPES = st.lists(st.integers(1, 3), min_size=0, max_size=4).map(tuple)


def test_binary():
    tally = Tally()

    @settings(max_examples=150, deadline=None)
    @given(
        a=SHAPES,
        b=SHAPES,
        op=st.sampled_from([operator.add, operator.mul, operator.sub, operator.iadd]),
        dtypes=st.sampled_from([(torch.float32, torch.float32), (torch.float32, torch.float64), (torch.int64,) * 2]),
    )
    def check(a, b, op, dtypes):
        x, y = torch.zeros(a, dtype=dtypes[0]), torch.zeros(b, dtype=dtypes[1])
        same_float = dtypes == (torch.float32, torch.float32)  # the formulas leave type promotion to PyTorch
        tally.agree(shapes.function(op, (_meta(x), _meta(y)), {}), lambda: op(x.clone(), y), same_float)
        tally.agree(shapes.function(op, (_meta(x), 2.0), {}), lambda: op(x.clone(), 2.0), x.is_floating_point())
        # `3 += y` is `3 + y`: an in-place formula needs a tensor on the left, and declines
        in_range = y.is_floating_point() and op is not operator.iadd
        tally.agree(shapes.function(op, (3, _meta(y)), {}), lambda: op(3, y.clone()), in_range)

    check()
    tally.assert_mostly_answered()


def test_cat():
    tally = Tally()

    @settings(max_examples=150, deadline=None)
    @given(
        shapes_=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3),
        dim=st.integers(-4, 3),
    )
    def check(shapes_, dim):
        ts = [torch.zeros(s) for s in shapes_]
        # PyTorch skips legacy empty (0,) tensors (whatever the others' rank and the dim); the formula declines
        in_range = len({t.dim() for t in ts}) == 1 and not any(tuple(t.shape) == (0,) for t in ts)
        metas = [_meta(t) for t in ts]
        tally.agree(shapes.function(torch.cat, (metas, dim), {}), lambda: torch.cat(ts, dim), in_range)
        tally.agree(shapes.function(torch.cat, (metas,), {"dim": dim}), lambda: torch.cat(ts, dim=dim), in_range)

    check()
    tally.assert_mostly_answered()


def test_flatten():
    tally = Tally()

    @settings(max_examples=100, deadline=None)
    @given(shape=SHAPES, start=st.integers(-5, 4), end=st.integers(-5, 4))
    def check(shape, start, end):
        x = torch.zeros(shape)
        in_range = x.dim() > 0  # flatten of a 0-d tensor (a 1-element vector) is left to PyTorch
        tally.agree(
            shapes.function(torch.flatten, (_meta(x), start, end), {}), lambda: torch.flatten(x, start, end), in_range
        )
        tally.agree(
            shapes.function(torch.flatten, (_meta(x),), {"start_dim": start}),
            lambda: torch.flatten(x, start_dim=start),
            in_range,
        )

    check()
    tally.assert_mostly_answered()


@pytest.mark.parametrize(
    "fn, args, outcome",
    [
        (F.relu, (torch.zeros(2, 3),), "answered"),
        (F.relu, (torch.zeros(2, 3, dtype=torch.int64),), "declined"),  # integer input: left to PyTorch
        (torch.sigmoid, (torch.zeros(2, 3),), "answered"),
        (F.layer_norm, (torch.zeros(2, 3, 4), (4,)), "answered"),
        (F.layer_norm, (torch.zeros(2, 3, 4), (3,)), "rejected"),
        (F.layer_norm, (torch.zeros(2, 3, 4), (4,), torch.ones(4), torch.zeros(4)), "answered"),
        (F.layer_norm, (torch.zeros(2, 3, 4), (4,), torch.ones(3)), "rejected"),
        (F.adaptive_avg_pool2d, (torch.zeros(1, 3, 5, 5), 2), "answered"),
        (F.adaptive_avg_pool2d, (torch.zeros(1, 3, 5, 5), (None, 2)), "answered"),
    ],
)
def test_other_functions(fn, args, outcome):
    meta = tuple(_meta(a) if isinstance(a, torch.Tensor) else a for a in args)
    assert _agree(shapes.function(fn, meta, {}), lambda: fn(*args)) == outcome
