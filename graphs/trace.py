"""torch.fx tracing for the channel graph: a tracer with user leaf modules, errors that say where tracing
broke, and an interpreter that records every node's value on the example inputs (shapes, and the plain
Python values that shape ops need)."""

from __future__ import annotations

import functools
import operator
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import shapes
from .layers import WINDOW_ATTENTION


class GraphBuildError(RuntimeError):
    """The channel graph cannot be built for this model or these inputs."""


# ops that compute statistics over a dimension: where that dimension holds channels, the masked model must
# compute them over the kept channels only (graphs/masked.py). Each such node is tagged with the module whose
# forward makes the call and its ordinal among that forward's calls of the same op (``node.meta["pk_site"]``),
# so the call can be found again in a trace of that module alone.
STAT_FUNCTIONS: dict[Any, str] = {
    F.layer_norm: "layer_norm", torch.layer_norm: "layer_norm", F.group_norm: "group_norm",
    torch.group_norm: "group_norm", torch.mean: "mean", torch.sum: "sum", torch.amax: "amax", torch.amin: "amin",
    torch.var: "var", torch.std: "std", torch.var_mean: "var_mean", torch.norm: "norm",
    F.batch_norm: "batch_norm",  # weight standardization (timm's StdConv2d) normalizes filters with it
}  # fmt: skip
STAT_METHODS = {
    "mean": "mean",
    "sum": "sum",
    "amax": "amax",
    "amin": "amin",
    "var": "var",
    "std": "std",
    "norm": "norm",
}


# Subclasses of standard layers whose forward differs from the parent's, verified to prune as their parent
# (tests/test_timm_models.py checks each with the equivalence check): "conv" prunes as its parent;
# "conv_out" is a weight-standardized conv: as its parent, plus a statistics site (each filter is
# standardized over its kept input channels in the masked model) and its per-filter ``gain``.
AS_PARENT = {
    "timm.layers.conv2d_same.Conv2dSame": "conv",
    "timm.layers.std_conv.StdConv2d": "conv_out",
    "timm.layers.std_conv.StdConv2dSame": "conv_out",
    "timm.layers.std_conv.ScaledStdConv2d": "conv_out",
    "timm.layers.std_conv.ScaledStdConv2dSame": "conv_out",
    "timm.layers.norm_act.BatchNormAct2d": "norm",
}


@functools.cache
def _as_parent_leaf(cls: type) -> bool:
    """Weight-standardized convs are kept as leaves (fx could trace them), so the conv rule sees the module
    and its weight rather than a computed weight passed to F.conv2d."""
    return AS_PARENT.get(f"{cls.__module__}.{cls.__qualname__}") == "conv_out"



# calls that need their calling module: views (slimming may have to update one of its size attributes) and
# Swin's window attention (its module's layers must be the ones it is called with)
_SCOPED = {"view", "reshape", torch.reshape, "split", torch.split, operator.getitem, *WINDOW_ATTENTION}


def stat_key(node: fx.Node) -> str | None:
    """The statistics op a node calls ("layer_norm", "mean", ...), or None."""
    if node.op == "call_function":
        return STAT_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return STAT_METHODS.get(node.target)
    return None


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...], leaf_names: set[str], all_children_leaves: bool = False):
        super().__init__()
        # buffers read in a traced forward become get_attr nodes (as parameters do), so arithmetic on them is
        # traced (FrozenBatchNorm2d) instead of folded into an anonymous constant
        self.proxy_buffer_attributes = True
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.all_children_leaves = all_children_leaves
        self.pk_stack: list[tuple[str, str]] = []
        self.pk_counts: list[dict[str, int]] = [{}]  # per module call: how many calls of each statistics op
        self.failed_in: tuple[str, str] | None = None

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        # fx looks a parameter or buffer up by scanning every named tensor of the model at each access
        # (quadratic on timm models, whose norm layers are traced into); one dict of ids instead
        if isinstance(attr_val, torch.Tensor):
            names = self.__dict__.get("_pk_names")
            if names is None:
                names = self._pk_names = {}
                for n, t in [*self.root.named_buffers(), *self.root.named_parameters()]:
                    names[id(t)] = n  # a parameter's name wins over a buffer's, as in fx
            n = names.get(id(attr_val))
            if n is not None:
                if n not in parameter_proxy_cache:
                    parameter_proxy_cache[n] = self.create_proxy("get_attr", n, (), {})
                return parameter_proxy_cache[n]
        return attr_val

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):  # type: ignore[override]
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if target in _SCOPED:  # views: slimming may have to update the size attribute of the calling module
            node.meta["pk_scope"] = self.pk_stack[-1][0] if self.pk_stack else ""
        key = stat_key(node)
        if key is not None:
            counts = self.pk_counts[-1]
            k = counts[key] = counts.get(key, -1) + 1
            node.meta["pk_site"] = (self.pk_stack[-1][0] if self.pk_stack else "", key, k)
        return node

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if (
            self.all_children_leaves
            or qualname in self.leaf_names
            or (self.leaf_types and isinstance(m, self.leaf_types))
            or _as_parent_leaf(type(m))
        ):
            return True
        return super().is_leaf_module(m, qualname)

    # fx's own call_module also keeps a module stack, copied into every node's meta; the channel graph
    # does not read it, and skipping it takes about a third off the trace
    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        qualname = self.path_of_module(m)
        self.pk_stack.append((qualname, type(m).__name__))
        self.pk_counts.append({})
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
            self.pk_counts.pop()

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


def shape_guard(condition: Any, taken: bool) -> None:
    """A branch that tracing resolved on the example's shapes (``_ShapeGuardTracer``): the graph records the
    condition, so the channel graph can freeze the channels a branch on a channel count depends on."""
    if bool(condition) != taken:
        raise GraphBuildError(f"a branch traced as {taken} on the example's shapes goes the other way here")


# what a condition may be computed from to be resolved on shapes: shape reads of activations and arithmetic
# on their values (``numel`` is left out: it counts channels without saying which dim)
_SHAPE_READS = {"size", "dim", "ndimension"}
_SHAPE_ARITH = {
    operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne, operator.add, operator.sub,
    operator.mul, operator.floordiv, operator.truediv, operator.mod, operator.getitem, operator.neg,
    operator.not_, operator.and_, operator.or_, min, max,
}  # fmt: skip


def is_shape_read(n: fx.Node) -> bool:
    """``x.shape``, ``x.ndim``, ``x.size(...)``, ``x.dim()``: a node that reads its tensor's shape only."""
    if n.op == "call_method":
        return n.target in _SHAPE_READS
    return n.op == "call_function" and n.target is getattr and n.args[1] in ("shape", "ndim")


def shape_condition(node: fx.Node) -> list[fx.Node] | None:
    """The shape reads ``node``'s value is computed from, when it is computed from shapes of activations and
    constants alone; None when it reads tensor values, a parameter's shape, or calls anything else."""
    reads, todo, seen = [], [node], set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if is_shape_read(n):
            if not _reads_an_input(n.args[0]):  # a parameter's shape changes with slimming: not followed
                return None
            reads.append(n)
        elif n.op == "call_function" and n.target in _SHAPE_ARITH:
            todo += node_args(n)
        else:
            return None
    return reads


def _reads_an_input(n: fx.Node) -> bool:
    todo, seen = [n], set()
    while todo:
        m = todo.pop()
        if m.op == "placeholder":
            return True
        if m not in seen:
            seen.add(m)
            todo += node_args(m)
    return False


def node_args(node: fx.Node) -> list[fx.Node]:
    """The nodes among ``node``'s arguments, nested ones included, in order."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


class _ShapeGuardTracer(_Tracer):
    """A tracer that runs every node on the example inputs as it records it, so that a branch on a shape
    (``if x.shape[-2] < self.kernel_size``, ``max(7, x.shape[-1])``) is resolved to the side those inputs
    take and traced through; the condition stays in the graph, consumed by a ``shape_guard`` node. A branch
    on tensor values is still an error (fx's), which keeps its module whole as before."""

    def __init__(self, leaf_types: tuple[type, ...], leaf_names: set[str], example_inputs: tuple[Any, ...]):
        super().__init__(leaf_types, leaf_names)
        self.example = list(example_inputs)
        self.concrete: dict[fx.Node, Any] = {}
        self.guarded: set[str] = set()
        self.executing = False  # running a node for real: module calls and attribute reads are not traced

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if self.executing:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self.executing:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):  # type: ignore[override]
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        node = proxy.node
        try:
            self.concrete[node] = self._run(node)
        except Exception:  # a value it cannot compute: a branch on it is fx's error, as without this tracer
            pass
        return proxy

    def _run(self, node: fx.Node) -> Any:
        if node.op == "placeholder":  # the i-th input (placeholders come first, this one last so far)
            return self.example[sum(1 for n in self.graph.nodes if n.op == "placeholder") - 1]
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: self.concrete[n])
        self.executing = True  # module attribute reads and calls below return plain values, not proxies
        try:
            with torch.no_grad():
                if node.op == "get_attr":
                    v: Any = self.root
                    for part in node.target.split("."):
                        v = getattr(v, part)
                    return v
                if node.op == "call_function":
                    return node.target(*args, **kwargs)
                if node.op == "call_method":
                    return getattr(args[0], node.target)(*args[1:], **kwargs)
                if node.op == "call_module":
                    return self.root.get_submodule(node.target)(*args, **kwargs)
        finally:
            self.executing = False
        raise ValueError(node.op)

    def to_bool(self, obj: fx.Proxy) -> bool:
        node = obj.node
        if node not in self.concrete or shape_condition(node) is None:
            return super().to_bool(obj)
        taken = bool(self.concrete[node])
        guard = self.create_node("call_function", shape_guard, (node, taken), {})
        guard.meta["pk_scope"] = self.pk_stack[-1][0] if self.pk_stack else ""
        if self.pk_stack:  # the module whose forward branches (its parents trace it as a leaf in masked.py)
            self.guarded.add(self.pk_stack[-1][0])
        return taken


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
    opaque: dict[str, str] = field(default_factory=dict)  # submodules kept whole because fx failed in them: why
    # submodules whose forward branched on a shape (``shape_guard``): traced for the example's shapes only
    guarded: frozenset[str] = frozenset()


def trace(
    model: nn.Module, leaf_modules: Iterable[type | str] = (), example_inputs: tuple[Any, ...] | None = None
) -> Traced:
    """Trace ``model`` symbolically. ``leaf_modules``: module classes or qualified names kept opaque. With
    ``example_inputs``, a submodule whose forward branches on a tensor's shape (``if x.shape[-1] < 7``) is
    traced along the branch those inputs take (``_ShapeGuardTracer``) instead of being kept whole."""
    leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
    leaf_names = {x for x in leaf_modules if isinstance(x, str)}
    bad = [x for x in leaf_modules if not isinstance(x, (type, str))]
    if bad:
        raise TypeError(f"leaf_modules takes module classes or qualified names, got {bad!r}")
    modules = dict(model.named_modules())
    unknown = sorted(n for n in leaf_names if n not in modules)
    if unknown:
        raise GraphBuildError(f"leaf_modules names {unknown} that are not submodules of the model")
    opaque: dict[str, str] = {}
    # traced in eval mode: a forward that reads ``self.training`` (timm's BatchNormAct2d passes it to
    # F.batch_norm) is recorded as it runs at inference, which is what the shapes are recorded in
    training = [m for m in modules.values() if m.training]
    for m in training:
        m.training = False
    try:
        return _trace_keeping_opaque(model, modules, leaf_types, leaf_names, opaque, example_inputs)
    finally:
        for m in training:
            m.training = True


def _trace_keeping_opaque(
    model: nn.Module,
    modules: dict[str, nn.Module],
    leaf_types: tuple[type, ...],
    leaf_names: set[str],
    opaque: dict[str, str],
    example_inputs: tuple[Any, ...] | None = None,
) -> Traced:
    guard_shapes = False  # the plain tracer first: it is faster, and most models never need more
    while True:
        if guard_shapes:
            tracer: _Tracer = _ShapeGuardTracer(leaf_types, leaf_names | set(opaque), example_inputs or ())
        else:
            tracer = _Tracer(leaf_types, leaf_names | set(opaque))
        try:
            graph = tracer.trace(model)
            guarded = frozenset(getattr(tracer, "guarded", ()))
            return Traced(tracer.root, graph, modules, opaque, guarded)
        except Exception as e:  # fx raises many types
            where = tracer.failed_in
            why = f"{type(e).__name__}: {_first_line(e)}{_user_frame(e)}"
            if example_inputs is not None and not guard_shapes and isinstance(e, fx.proxy.TraceError):
                guard_shapes = True  # control flow on a proxy: try again, resolving branches on shapes
                continue
            if where is None or not where[0] or where[0] in opaque or len(opaque) >= MAX_OPAQUE:
                raise _trace_error(model, where, why) from e
            # a submodule fx cannot follow is kept whole (its boundary channels frozen); the rest is traced
            opaque[where[0]] = f"{where[1]}: {why}"


MAX_OPAQUE = 256


def _first_line(e: BaseException) -> str:
    """The message of an fx error without its trailing advice ("Original traceback: None", tlparse...)."""
    return (str(e).strip().splitlines() or [""])[0]


def _trace_error(model: nn.Module, where: tuple[str, str] | None, why: str) -> GraphBuildError:
    if where is None or not where[0]:
        return GraphBuildError(
            f"torch.fx cannot trace the forward of {type(model).__name__} itself: {why}. Submodules fx cannot "
            f"trace are kept whole automatically, but the top-level forward must be traceable: move the "
            f"data-dependent or non-torch code into a submodule (it is then kept whole, its channels frozen at "
            f"its boundary)"
        )
    return GraphBuildError(
        f"torch.fx cannot trace the model: in module {where[0]!r} ({where[1]}): {why}. Mark it opaque with "
        f"leaf_modules=['{where[0]}'] (CLI: --leaf-modules {where[0]}); its channels are then frozen at its boundary"
    )


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
        self.extra_traceback = False  # _node_error says where; fx would append its node dump and tlparse advice
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
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Check that example_inputs have the "
        f"shape and dtype the model expects (for images: a batch [N, C, H, W] with the model's C and a large "
        f"enough H, W; CLI: --image-size or --input-shape)"
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
            try:
                rec.run(*example_inputs)
            except GraphBuildError as e:  # without the notes fx's interpreter adds ("Original traceback: None")
                raise GraphBuildError(str(e)) from e.__cause__
            return rec.values
    finally:
        for m in training:
            m.training = True
