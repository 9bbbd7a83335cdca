"""torch.fx tracing for the channel graph: a tracer with user leaf modules, errors that say where tracing
broke, and an interpreter that records every node's value on the example inputs (shapes, and the plain
Python values that shape ops need)."""

from __future__ import annotations

import operator
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from . import shapes


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

    # fx's own call_module also keeps a module stack, copied into every node's meta; the channel graph
    # does not read it, and skipping it takes about a third off the trace
    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        qualname = self.path_of_module(m)
        self.pk_stack.append((qualname, type(m).__name__))
        try:
            if self.is_leaf_module(m, qualname):
                return self.create_proxy("call_module", qualname, args, kwargs)
            return forward(*args, **kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module is where tracing broke
                self.failed_in = self.pk_stack[-1]
            raise
        finally:
            self.pk_stack.pop()

    def create_arg(self, a: Any) -> Any:
        # the common argument types first: fx's generic version tests a dozen cases for each
        t = type(a)
        if t is fx.Proxy:
            return a.node
        if t in _PLAIN:
            return a
        if t is tuple:
            return tuple([self.create_arg(x) for x in a])
        if t is list:
            return [self.create_arg(x) for x in a]
        if t is dict and all(type(k) is str for k in a):
            return {k: self.create_arg(v) for k, v in a.items()}
        return super().create_arg(a)


_PLAIN = {int, float, bool, str, type(None)}


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
    modules: dict[str, nn.Module]  # qualified name -> submodule, as root.named_modules() gives them


def trace(model: nn.Module, leaf_modules: Iterable[type | str] = ()) -> Traced:
    """Trace ``model`` symbolically. ``leaf_modules``: module classes or qualified names kept opaque."""
    leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
    leaf_names = {x for x in leaf_modules if isinstance(x, str)}
    bad = [x for x in leaf_modules if not isinstance(x, (type, str))]
    if bad:
        raise TypeError(f"leaf_modules takes module classes or qualified names, got {bad!r}")
    modules = dict(model.named_modules())
    unknown = sorted(n for n in leaf_names if n not in modules)
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
    return Traced(tracer.root, graph, modules)


def _user_frame(e: BaseException) -> str:
    """' at file:line' of the innermost traceback frame outside torch, if any."""
    frames = traceback.extract_tb(e.__traceback__)
    for fr in reversed(frames):
        if "/torch/" not in fr.filename and "graphs/trace.py" not in fr.filename:
            return f" at {fr.filename}:{fr.lineno} ({(fr.line or '').strip()})"
    return ""


class _Recorder(fx.Interpreter):
    """Runs the traced graph once for real and keeps each node's value (tensors as meta tensors). Used only
    when the meta-device run (``_MetaRunner``) fails: data-dependent shapes, an op without a meta kernel,
    or inputs that do not fit (the real run then gives the error)."""

    def __init__(self, traced: Traced):
        super().__init__(traced.root, garbage_collect_values=True, graph=traced.graph)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            raise _node_error(n, e) from e
        self.values[n] = _to_meta(out)
        return out


def _node_error(n: fx.Node, e: Exception) -> GraphBuildError:
    where = f"module {n.target!r}" if n.op == "call_module" else f"{n.op} {n.target}"
    return GraphBuildError(
        f"running the model on example_inputs failed at node {n.name!r} ({where}): "
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
        f"Check that example_inputs have the shape and dtype the model "
        f"expects (for images: a batch [N, C, H, W] with the model's C and a large enough H, W)."
    )


class _MetaRunner:
    """Runs the traced graph on the meta device: every tensor is a (shape, dtype) meta tensor, parameters
    included, so no arithmetic is done. The common CNN ops get their output shape from a formula
    (``shapes.py``); PyTorch's own meta kernels, several of them Python decompositions costing ~0.5 ms a
    call, run the rest."""

    def __init__(self, traced: Traced):
        self.root = traced.root
        self.graph = traced.graph
        self.modules = traced.modules
        self.values: dict[fx.Node, Any] = {}

    def run(self, inputs: tuple[Any, ...]) -> dict[fx.Node, Any]:
        values = self.values
        pending = list(inputs)
        for n in self.graph.nodes:
            try:
                if n.op == "placeholder":
                    out = self._placeholder(n, pending)
                elif n.op == "get_attr":
                    out = _to_meta(operator.attrgetter(n.target)(self.root))
                else:
                    args, kwargs = fx.node.map_arg((n.args, n.kwargs), values.__getitem__)
                    if n.op == "output":
                        out = args[0]
                    elif n.op == "call_module":
                        out = self._module(self.modules[n.target], args, kwargs)
                    elif n.op == "call_function":
                        out = shapes.function(n.target, args, kwargs)
                        if out is NotImplemented:
                            out = _to_meta(n.target(*args, **kwargs))
                    else:  # call_method
                        if n.target.endswith("_") and isinstance(args[0], torch.Tensor):
                            # in place: keep the recorded value of the node it mutates
                            args = (torch.empty_like(args[0]), *args[1:])
                        out = _to_meta(getattr(args[0], n.target)(*args[1:], **kwargs))
            except Exception as e:
                raise _node_error(n, e) from e
            values[n] = out
        return values

    @staticmethod
    def _placeholder(n: fx.Node, pending: list[Any]) -> Any:
        if n.target.startswith("*"):
            rest = list(pending)
            pending.clear()
            return rest
        if pending:
            return pending.pop(0)
        if n.args:  # a default value
            return n.args[0]
        raise RuntimeError(f"the model takes an input {n.target!r} that example_inputs does not give")

    def _module(self, mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = shapes.module(mod, args, kwargs)
        if out is not NotImplemented:
            return out
        state = {k: _to_meta(v) for k, v in [*mod.named_parameters(), *mod.named_buffers()]}
        return _to_meta(torch.func.functional_call(mod, state, tuple(args), dict(kwargs)))


def _to_meta(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v if v.device.type == "meta" else torch.empty(v.shape, dtype=v.dtype, device="meta")
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
    training = [m for m in traced.modules.values() if m.training]
    try:
        for m in training:  # the modules in train mode only (Module.__setattr__ is slow)
            m.training = False
        with torch.no_grad():
            try:
                return _MetaRunner(traced).run(_to_meta(tuple(example_inputs)))
            except GraphBuildError:
                pass  # an op without a meta kernel, or data-dependent: run it for real (and report that error)
            rec = _Recorder(traced)
            rec.run(*example_inputs)
            return rec.values
    finally:
        for m in training:
            m.training = True
