"""torch.fx tracing for the channel graph: a tracer with user leaf modules, errors that say where tracing
broke, and an interpreter that records every node's value on the example inputs (shapes, and the plain
Python values that shape ops need)."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn


class GraphBuildError(RuntimeError):
    """The channel graph cannot be built for this model or these inputs."""


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...], leaf_names: set[str]):
        super().__init__()
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.pk_stack: list[tuple[str, str]] = []
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        qualname = self.path_of_module(m)
        self.pk_stack.append((qualname, type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module is where tracing broke
                self.failed_in = self.pk_stack[-1]
            raise
        finally:
            self.pk_stack.pop()


def unwrap(model: Any) -> nn.Module:
    """The bare module of ``model`` (DDP / DataParallel wrappers removed); a clear error for a non-module."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected a torch.nn.Module, got {type(model).__name__}; pass the model object itself "
            "(for example torchvision.models.resnet18()), not its class, state_dict or a checkpoint path"
        )
    return model


@dataclass(frozen=True)
class Traced:
    """A traced model: the fx graph and the module it names (no ``fx.GraphModule``: the channel graph never
    runs generated code, and building one costs as much as a third of the trace)."""

    root: nn.Module
    graph: fx.Graph


def trace(model: nn.Module, leaf_modules: Iterable[type | str] = ()) -> Traced:
    """Trace ``model`` symbolically. ``leaf_modules``: module classes or qualified names kept opaque."""
    leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
    leaf_names = {x for x in leaf_modules if isinstance(x, str)}
    bad = [x for x in leaf_modules if not isinstance(x, (type, str))]
    if bad:
        raise TypeError(f"leaf_modules takes module classes or qualified names, got {bad!r}")
    unknown = sorted(n for n in leaf_names if n not in dict(model.named_modules()))
    if unknown:
        raise GraphBuildError(f"leaf_modules names {unknown} that are not submodules of the model")
    tracer = _Tracer(leaf_types, leaf_names)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; re-raise one that says where and what to do
        where = tracer.failed_in or ("", type(model).__name__)
        frame = _user_frame(e)
        name = where[0] or "<root>"
        raise GraphBuildError(
            f"torch.fx cannot trace the model: in module {name!r} ({where[1]}){frame}: "
            f"{type(e).__name__}: {e}\n"
            f"If that module cannot be traced (data-dependent control flow, non-torch calls), keep it opaque "
            f"with build_graph(..., leaf_modules=[{where[1]}]) or leaf_modules=['{name}']; its channels are "
            f"then frozen at its boundary."
        ) from e
    return Traced(tracer.root, graph)


def _user_frame(e: BaseException) -> str:
    """' at file:line' of the innermost traceback frame outside torch, if any."""
    frames = traceback.extract_tb(e.__traceback__)
    for fr in reversed(frames):
        if "/torch/" not in fr.filename and "graphs/trace.py" not in fr.filename:
            return f" at {fr.filename}:{fr.lineno} ({(fr.line or '').strip()})"
    return ""


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps each node's value: tensors as (shape, dtype) meta-tensors on
    the 'meta' device, everything else as is. With ``meta=True`` the whole run happens on the meta device
    (parameters swapped for meta copies), so no arithmetic is done."""

    def __init__(self, traced: Traced, meta: bool = False):
        super().__init__(traced.root, garbage_collect_values=True, graph=traced.graph)
        self.values: dict[fx.Node, Any] = {}
        self.meta = meta

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        if not self.meta:
            return super().call_module(target, args, kwargs)
        mod = self.fetch_attr(target)
        if type(mod) in _SAME_SHAPE and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            # meta kernels of these run through Python decompositions (~1 ms each); the shape is the input's
            x = args[0]
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and (x.dim() < 2 or x.shape[1] != mod.num_features):
                raise RuntimeError(f"{type(mod).__name__}({mod.num_features}) got an input of shape {tuple(x.shape)}")
            return x
        if type(mod) is nn.LayerNorm and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            x, ns = args[0], tuple(mod.normalized_shape)
            if tuple(x.shape[x.dim() - len(ns) :]) != ns:
                raise RuntimeError(f"LayerNorm({ns}) got an input of shape {tuple(x.shape)}")
            return x
        state = {k: _to_meta(v) for k, v in [*mod.named_parameters(), *mod.named_buffers()]}
        return torch.func.functional_call(mod, state, tuple(args), dict(kwargs))

    def get_attr(self, target: Any, args: Any, kwargs: Any) -> Any:
        v = super().get_attr(target, args, kwargs)
        return _to_meta(v) if self.meta else v

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            where = f"module {n.target!r}" if n.op == "call_module" else f"{n.op} {n.target}"
            raise GraphBuildError(
                f"running the model on example_inputs failed at node {n.name!r} ({where}): "
                f"{type(e).__name__}: {str(e).splitlines()[0]}\n"
                f"Check that example_inputs have the shape and dtype the model "
                f"expects (for images: a batch [N, C, H, W] with the model's C and a large enough H, W)."
            ) from e
        self.values[n] = _to_meta(out)
        return out


# modules whose output has the input's shape and dtype (eval mode)
_SAME_SHAPE = {
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.Identity,
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
}  # fmt: skip


def _to_meta(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
        return type(v)(_to_meta(x) for x in v)
    if isinstance(v, tuple):  # namedtuple
        return type(v)(*(_to_meta(x) for x in v))
    if isinstance(v, dict):
        return {k: _to_meta(x) for k, x in v.items()}
    return v


def record(traced: Traced, example_inputs: tuple[Any, ...]) -> dict[fx.Node, Any]:
    """Each node's value on ``example_inputs`` (tensors as meta tensors). Runs without grad, with every
    module in eval mode (restored afterwards) so BatchNorm statistics are not touched. Shapes are
    computed on the meta device (no arithmetic, so fast at any input size); a model that needs real
    values (data-dependent shapes) or an op without a meta kernel is run for real instead."""
    modes = {m: m.training for m in traced.root.modules()}
    try:
        traced.root.eval()
        with torch.no_grad():
            try:
                rec = _Recorder(traced, meta=True)
                rec.run(*_to_meta(tuple(example_inputs)))
                return rec.values
            except GraphBuildError:
                pass  # an op without a meta kernel, or data-dependent: run it for real (and report that error)
            rec = _Recorder(traced)
            rec.run(*example_inputs)
            return rec.values
    finally:
        for m, t in modes.items():
            m.training = t
