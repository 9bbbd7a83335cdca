"""The coupling rules: one pass over the fx graph that annotates every tensor with its channel atoms and
couples (unions) atoms that must be pruned together. Anything the rules do not understand on a channel
path freezes the channels involved, with the node and op as the reason; nothing is guessed."""

from __future__ import annotations

import functools
import inspect
import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import shapes
from .atoms import Ann, Atoms, ParamRef
from .graph import StatSite
from .layers import WINDOW_ATTENTION, PrunedMultiheadAttention, swin
from .trace import AS_PARENT, Traced, node_args, shape_condition, shape_guard

# -- op tables -------------------------------------------------------------------------------------------

PASS_MODULES: tuple[type, ...] = (
    *shapes.SAME_SHAPE_MODULES,  # activations, dropout, identity
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)  # fmt: skip

PASS_FUNCTIONS: set[Any] = shapes.SAME_SHAPE_FUNCTIONS | {  # activations, dropout, stochastic depth
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, F.pad,
    torch.clamp, torch.clone, torch.abs, torch.exp, operator.neg, torch.neg,
}  # fmt: skip

PASS_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "clamp_min", "clamp_max", "contiguous",
    "clone", "detach", "float", "half", "bfloat16", "double", "to", "type_as", "abs", "neg", "exp",
}  # fmt: skip

BINARY_FUNCTIONS: set[Any] = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
    torch.minimum,
}  # fmt: skip
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}

MOVE_FUNCTIONS: set[Any] = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk,
    torch.split, torch.movedim, torch.narrow, operator.getitem, torch.swapaxes,
}  # fmt: skip
MOVE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "chunk", "split", "expand",
    "expand_as", "narrow", "movedim", "unflatten", "view_as", "reshape_as", "swapaxes",
}  # fmt: skip
MOVE_MODULES: tuple[type, ...] = (nn.Flatten, nn.Unflatten)

REDUCE_FUNCTIONS: set[Any] = {
    torch.mean, torch.sum, torch.amax, torch.amin, torch.var, torch.std, torch.var_mean, torch.norm,
}  # fmt: skip
REDUCE_METHODS = {"mean", "sum", "amax", "amin", "var", "std", "norm"}

# element-wise on values computed from parameters alone (FrozenBatchNorm's ``(running_var + eps).rsqrt()``)
PARAM_UNARY_FUNCTIONS: set[Any] = {torch.rsqrt, torch.sqrt, torch.reciprocal, torch.pow, operator.pow}
PARAM_UNARY_METHODS = {"rsqrt", "sqrt", "reciprocal", "pow", "sign"}

# norms with one statistic per channel, called as functions on module attributes (timm's BatchNormAct2d)
CHANNEL_NORM_FUNCTIONS: set[Any] = {F.batch_norm, torch.batch_norm, F.instance_norm, torch.instance_norm}
LAYER_NORM_FUNCTIONS: set[Any] = {F.layer_norm, torch.layer_norm}
GROUP_NORM_FUNCTIONS: set[Any] = {F.group_norm, torch.group_norm}

# values these return carry no channel data
SHAPE_METHODS = {"size", "dim", "numel", "shape", "device", "dtype", "ndimension"}

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


_STANDARD = (*CONVS, nn.Linear, *NORMS, *INSTANCE_NORMS, nn.GroupNorm, nn.LayerNorm)


def _standard_base(m: nn.Module) -> type | None:
    """The standard layer class ``m`` is an instance of (None if none)."""
    for cls in type(m).__mro__:
        if cls in _STANDARD:
            return cls
    return None


@dataclass(frozen=True)
class SizeOf:
    """``x.size()`` / ``x.shape`` of a tensor with channels ``x``."""

    x: Ann


@dataclass(frozen=True)
class ChanCount:
    """An int that is (``derived=False``) or is computed from (``derived=True``) the channel count of the
    channels ``atoms``: it changes when they are pruned."""

    atoms: torch.Tensor
    derived: bool


@dataclass
class MacsTerm:
    """MACs of one conv/linear call: ``coef * kept(weight dim 0) * kept(weight dim 1)`` per sample
    (``param`` names the weight; ``rows``: how many of its dim-0 rows the call uses, None for all)."""

    module: str
    coef: int
    param: str = "weight"
    rows: int | None = None


class Propagator:
    """Walks the fx graph once, annotating tensors and coupling atoms."""

    def __init__(self, traced: Traced, values: dict[fx.Node, Any], atoms: Atoms):
        self.graph = traced.graph
        self.values = values
        self.atoms = atoms
        self.modules = traced.modules
        self.env: dict[fx.Node, Any] = {}
        self.macs_terms: list[MacsTerm] = []
        self.unused_params: list[str] = []
        self.stat_sites: list[StatSite] = []
        self.size_attrs: list[tuple[str, str, int, str]] = []  # (module, attribute, index, stat member key)
        self.sizes_seen = False  # whether any x.size()/x.shape of a tensor with channels was read
        self.size_checks: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # decided once couplings are known
        self.opaque = traced.opaque
        self.guarded = traced.guarded

    # -- helpers ---------------------------------------------------------------------------------------
    def ann(self, a: Any) -> Any:
        return self.env.get(a) if isinstance(a, fx.Node) else None

    def inputs(self, node: fx.Node) -> list[Ann]:
        """Every channel annotation among the node's arguments."""
        found: list[Ann] = []

        def visit(x: Any) -> None:
            if isinstance(x, Ann):
                found.append(x)
            elif isinstance(x, (list, tuple)):
                for y in x:
                    visit(y)

        fx.node.map_arg((node.args, node.kwargs), lambda n: visit(self.env.get(n)) or n)
        return found

    def freeze_inputs(self, node: fx.Node, why: str) -> None:
        for a in self.inputs(node):
            self.atoms.freeze(a.atoms, f"{node.name}: {why}")

    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"module {node.target} ({type(self.modules[node.target]).__name__})"
        if node.op == "call_method":
            return f"method .{node.target}()"
        return f"function {getattr(node.target, '__name__', node.target)}"

    def value(self, a: Any) -> Any:
        """The recorded value of an argument (nodes replaced by what they computed)."""
        return fx.node.map_arg(a, lambda n: self.values.get(n))

    # -- the pass --------------------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.graph.nodes:
            self.env[node] = self.visit(node)
        self.finish_size_checks()

    def finish_size_checks(self) -> None:
        """A view sized with the channel count of channels that are not yet known to be its input's may still
        be exact: timm's Swin reshapes its attention output with the count of the block's input, and the two
        are coupled later, by the residual add. Once every coupling is known, the two channel sets must be
        the same classes (so their kept counts agree under any mask), or both are frozen."""
        if not self.size_checks:
            return
        labels = self.atoms.roots()
        for why, counted, viewed in self.size_checks:
            if not torch.equal(torch.sort(labels[counted]).values, torch.sort(labels[viewed]).values):
                self.atoms.freeze(counted, why)
                self.atoms.freeze(viewed, why)

    def visit(self, node: fx.Node) -> Any:
        op = node.op
        if op == "placeholder":
            v = self.values.get(node)
            if isinstance(v, torch.Tensor) and v.dim() >= 1:
                d = 1 if v.dim() >= 2 else 0
                return Ann(d, self.atoms.fresh(v.shape[d], f"input {node.name}", frozen="model input"))
            return None
        if op == "get_attr":
            v = self.values.get(node)
            if isinstance(v, torch.Tensor):
                module, _, param = node.target.rpartition(".")
                return ParamRef(tuple(v.shape), tuple((module, param, d, d) for d, n in enumerate(v.shape) if n > 1))
            return None
        if op == "output":
            for a in self.inputs(node):
                self.atoms.freeze(a.atoms, "model output")
            return None
        if op == "call_module":
            m = self.modules[node.target]
            if self.spread(node) and not isinstance(m, MOVE_MODULES):
                return self.unknown(node, f"{self.describe(node)} reads channels spread over several dims")
            return self.call_module(node, m)
        t = node.target
        if op == "call_method":
            is_move = t in MOVE_METHODS or t in PASS_METHODS
        else:
            is_move = t in MOVE_FUNCTIONS or t in PASS_FUNCTIONS or t is getattr
        if self.spread(node) and not is_move:
            return self.unknown(node, f"{self.describe(node)} reads channels spread over several dims")
        return self.call_function(node)

    def spread(self, node: fx.Node) -> bool:
        return any(a.spread is not None for a in self.inputs(node))

    def unknown(self, node: fx.Node, why: str | None = None) -> None:
        if self.inputs(node):
            self.freeze_inputs(node, why or f"{self.describe(node)} is not understood on a channel path")
        return None

    # -- modules ---------------------------------------------------------------------------------------
    def call_module(self, node: fx.Node, m: nn.Module) -> Any:
        name = node.target
        x = self.ann(node.args[0]) if node.args else None
        out = self.values.get(node)
        base = _standard_base(m)
        if base is not None and type(m).forward is not base.forward:
            # a subclass of a standard layer with a forward of its own: its parent's rule holds only where
            # that was verified (AS_PARENT); anything else is kept whole
            how = AS_PARENT.get(f"{type(m).__module__}.{type(m).__qualname__}")
            if how is None:
                why = self.opaque.get(name, f"its forward overrides {base.__name__}'s")
                return self.unknown(node, f"module {name} ({type(m).__name__}) is kept whole: {why}")
            if name in self.opaque and "pruned as" not in self.opaque[name]:
                self.opaque[name] += f"; pruned as {base.__name__} (a verified subclass: channels as its parent's)"
            if how == "conv_out":
                # weight standardization: each filter is normalized over its input channels (F.batch_norm on
                # the weight in the module's forward). With groups == 1 that is a statistics site: the masked
                # model standardizes over the kept input channels, as the slimmed conv does. Whole groups
                # (grouped, depthwise) keep every input of a kept filter: nothing to mask.
                ann = self.conv(node, name, m, x, out)
                gain = getattr(m, "gain", None)  # ScaledStdConv2d: a gain per filter
                if isinstance(gain, torch.Tensor) and gain.dim() >= 1 and gain.shape[0] == m.out_channels:
                    self.atoms.alias(name, "gain", 0, "out", of=(name, "weight", 0))
                if m.groups == 1 and isinstance(x, Ann) and x.dim == 1 and x.size == m.in_channels:
                    self.stat_site(node, x, (name, "batch_norm", 0), "weight_std")
                return ann
        elif name in self.opaque:
            return self.unknown(node, f"module {name} is kept whole: fx cannot trace it ({self.opaque[name]})")
        if isinstance(m, nn.MultiheadAttention) and type(m).forward in _MHA_FORWARDS:
            return self.attention(node, name, m)
        if isinstance(m, CONVS):
            return self.conv(node, name, m, x, out)
        if isinstance(m, nn.Linear):
            return self.linear(node, name, m, x, out)
        if isinstance(m, NORMS) or (isinstance(m, INSTANCE_NORMS) and m.affine):
            return self.channel_norm(node, name, m, x, m.num_features)
        if isinstance(m, INSTANCE_NORMS):
            return self.passthrough(node, x, out)
        if isinstance(m, nn.GroupNorm) and type(m).forward is nn.GroupNorm.forward:
            w = _module_params(name, m, ("weight", "bias"))
            return self.group_norm(node, x, m.num_groups, w, (name, "group_norm", 0), m)
        if isinstance(m, nn.LayerNorm) and type(m).forward is nn.LayerNorm.forward:
            w = _module_params(name, m, ("weight", "bias"))
            return self.layer_norm(node, x, tuple(m.normalized_shape), w, (name, "layer_norm", 0), m)
        if isinstance(m, nn.PReLU):
            if m.num_parameters == 1:
                return self.passthrough(node, x, out)
            return self.channel_norm(node, name, m, x, m.num_parameters, role="param")
        if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            return self.softmax(node, x, out, m.dim)
        if isinstance(m, PASS_MODULES):
            return self.passthrough(node, x, out)
        if isinstance(m, MOVE_MODULES):
            return self.move(node)
        if len(node.args) >= 1 and isinstance(self.values.get(node), torch.Tensor) and not self.inputs(node):
            return None
        return self.unknown(node)

    def conv(
        self, node: fx.Node, name: str, m: nn.Conv2d, x: Any, out: torch.Tensor, frozen_in: str | None = None
    ) -> Ann:
        A = self.atoms
        cin, g = m.in_channels, m.groups
        ok_in = isinstance(x, Ann) and x.dim == 1 and x.size == cin
        if frozen_in and isinstance(x, Ann):
            A.freeze(x.atoms, f"{node.name}: {frozen_in}")
        role = "dw" if g > 1 and g == cin == m.out_channels and ok_in else "out"
        w_out = A.param(name, "weight", 0, m.out_channels, role)
        if m.bias is not None:
            A.alias(name, "bias", 0, role, of=(name, "weight", 0))
        kvol = math.prod(m.weight.shape[2:])
        spatial = math.prod(out.shape[2:])
        if g == 1:
            w_in = A.param(name, "weight", 1, cin, "in")
            if ok_in:
                A.union(w_in, x.atoms)
            else:
                self.unknown(node, f"conv {name} reads a tensor whose channel dim is not dim 1")
                A.union(w_in, A.fresh(cin, f"{name} input", frozen=f"{node.name}: input of unknown channel layout"))
            self.macs_terms.append(MacsTerm(name, spatial * kvol))
            return Ann(1, w_out)
        if role == "dw":  # depthwise: one filter per channel, the channel space passes through
            A.union(w_out, x.atoms)
            self.macs_terms.append(MacsTerm(name, spatial * kvol))
            return Ann(1, x.atoms)
        # grouped conv (and depthwise with a multiplier): prune whole groups. Every channel of input group j
        # and of output group j becomes one unit, so the conv stays a valid grouped conv with fewer groups.
        if ok_in:
            wi, wo = cin // g, m.out_channels // g
            units = x.atoms.view(g, wi)
            A.union(units.flatten(), units[:, :1].expand(g, wi).flatten())
            A.union(w_out, units[:, :1].expand(g, wo).flatten())
        else:
            why = f"grouped conv {name} (groups={g}) reads a tensor whose channel dim is not dim 1"
            self.unknown(node, why)
            A.freeze(w_out, f"{node.name}: {why}")
        self.macs_terms.append(MacsTerm(name, spatial * kvol))
        return Ann(1, w_out)

    def linear(self, node: fx.Node, name: str, m: nn.Linear, x: Any, out: torch.Tensor) -> Ann:
        A = self.atoms
        w_out = A.param(name, "weight", 0, m.out_features, "out")
        if m.bias is not None:
            A.alias(name, "bias", 0, "out", of=(name, "weight", 0))
        w_in = A.param(name, "weight", 1, m.in_features, "in")
        if isinstance(x, Ann) and x.dim == out.dim() - 1 and x.size == m.in_features:
            A.union(w_in, x.atoms)
        else:
            self.unknown(node, f"linear {name} reads a tensor whose channel dim is not the last dim")
            A.union(w_in, A.fresh(m.in_features, f"{name} input", frozen=f"{node.name}: input of unknown layout"))
        rows = out.numel() // (out.shape[0] if out.dim() > 1 else 1) // m.out_features
        self.macs_terms.append(MacsTerm(name, rows))
        return Ann(out.dim() - 1, w_out)

    def attention(self, node: fx.Node, name: str, m: nn.MultiheadAttention) -> Any:
        """``nn.MultiheadAttention``: its query, key and value inputs are read by the columns of their input
        projections, and its output channels are the rows of ``out_proj``: those are the channels the rest of
        the model sees (a transformer's residual stream). Its heads are internal and stay whole. Slimming a
        MultiheadAttention with fewer input channels makes it a ``PrunedMultiheadAttention``."""
        A = self.atoms
        names = ("query", "key", "value")
        bound = dict(zip(names, node.args))
        bound.update({k: v for k, v in node.kwargs.items() if k in names})
        vals = [self.values.get(bound.get(k)) for k in names]
        anns = [self.env.get(bound.get(k)) if isinstance(bound.get(k), fx.Node) else None for k in names]
        out = self.values.get(node)
        if not all(isinstance(v, torch.Tensor) for v in vals) or not isinstance(out, tuple):
            return self.unknown(node)
        if m._qkv_same_embed_dim:  # one packed weight: its columns read query, key and value alike
            weights = [(name, "in_proj_weight")] * 3
        else:
            weights = [(name, f"{p}_proj_weight") for p in "qkv"]
        E = m.embed_dim
        batch_dim = 1 if not m.batch_first else 0
        for (mod, param), a, v in zip(weights, anns, vals):
            size = v.shape[-1]
            w_in = A.param(mod, param, 1, size, "in")
            if isinstance(a, Ann) and a.spread is None and a.dim == v.dim() - 1 and a.size == size:
                A.union(w_in, a.atoms)
            else:
                why = f"{self.describe(node)} reads a tensor whose channel dim is not the last dim"
                if isinstance(a, Ann):
                    A.freeze(a.atoms, f"{node.name}: {why}")
                A.union(w_in, A.fresh(size, f"{name} input", frozen=f"{node.name}: {why}"))
            per_sample = v.numel() // (v.shape[batch_dim] if v.dim() == 3 else 1) // size
            self.macs_terms.append(MacsTerm(mod, per_sample, param, E if param == "in_proj_weight" else None))
        w_out = A.param(f"{name}.out_proj", "weight", 0, E, "out")
        if m.out_proj.bias is not None:
            A.alias(f"{name}.out_proj", "bias", 0, "out", of=(f"{name}.out_proj", "weight", 0))
        tokens = out[0].numel() // (out[0].shape[batch_dim] if out[0].dim() == 3 else 1) // E
        self.macs_terms.append(MacsTerm(f"{name}.out_proj", tokens))
        return (Ann(out[0].dim() - 1, w_out), None)

    def window_attention(self, node: fx.Node) -> Any:
        """torchvision Swin's ``shifted_window_attention(x, qkv.weight, proj.weight, ...)`` called by its
        ``ShiftedWindowAttention(V2)`` module: like ``attention``, the input channels are the columns of
        ``qkv`` and the output channels the rows of ``proj``; the heads stay whole. Slimming switches the
        module to ``PrunedShiftedWindowAttention(V2)``, which takes its head width from its weights."""
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs).arguments
        owner_name = node.meta.get("pk_scope")
        owner = self.modules.get(owner_name) if owner_name is not None else None
        x, inp = self.ann(bound.get("input")), self.values.get(bound.get("input"))

        def is_param(arg: str, module: str, param: str) -> bool:  # the module's parameter itself
            a = bound.get(arg)
            return isinstance(a, fx.Node) and a.op == "get_attr" and a.target == f"{module}.{param}"

        if not isinstance(owner, swin.ShiftedWindowAttention) or not isinstance(x, Ann) or x.spread is not None:
            return self.unknown(node)
        qkv, proj = f"{owner_name}.qkv", f"{owner_name}.proj"
        ok = is_param("qkv_weight", qkv, "weight") and is_param("proj_weight", proj, "weight")
        for arg, module in (("qkv_bias", qkv), ("proj_bias", proj)):
            has = bound.get(arg) is not None
            ok = ok and has == (self.modules[module].bias is not None)
            ok = ok and (not has or is_param(arg, module, "bias"))
        if not ok or x.dim != inp.dim() - 1 or inp.dim() != 4:
            return self.unknown(node, f"{self.describe(node)} is not called on its module's own layers")
        A = self.atoms
        A.union(A.param(qkv, "weight", 1, self.modules[qkv].in_features, "in"), x.atoms)
        w_out = A.param(proj, "weight", 0, self.modules[proj].out_features, "out")
        if self.modules[proj].bias is not None:
            A.alias(proj, "bias", 0, "out", of=(proj, "weight", 0))
        wh, ww = bound["window_size"]
        tokens = -(-inp.shape[1] // wh) * wh * -(-inp.shape[2] // ww) * ww  # after padding to whole windows
        self.macs_terms += [MacsTerm(qkv, tokens), MacsTerm(proj, tokens)]
        return Ann(x.dim, w_out)

    def channel_norm(self, node, name: str, m: nn.Module, x: Any, c: int, role: str = "norm") -> Any:
        if not (isinstance(x, Ann) and x.dim == 1 and x.size == c):
            return self.unknown(node, f"{type(m).__name__} {name} reads a tensor whose channel dim is not dim 1")
        first = None
        for p in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(m, p, None)
            if isinstance(t, torch.Tensor) and t.dim() == 1 and len(t) == c:
                if first is None:
                    first = (name, p, 0)
                    self.atoms.union(self.atoms.param(name, p, 0, c, role), x.atoms)
                else:
                    self.atoms.alias(name, p, 0, role, of=first)
        return x

    def couple_params(self, node: fx.Node, x: Ann, params: list[Any], role: str, axis: int = 0) -> bool:
        """Couple the channel dim of ``x`` with dim ``axis`` of each parameter value in ``params`` (None
        entries skipped); False, with the channels frozen, when one is not a parameter of that size."""
        for p in params:
            if p is None:
                continue
            srcs = p.at(axis) if isinstance(p, ParamRef) else []
            if not srcs or p.shape[axis] != x.size:
                self.unknown(node, f"{self.describe(node)} takes a per-channel tensor that is not a parameter")
                return False
            for module, param, pd in srcs:
                self.atoms.union(self.atoms.param(module, param, pd, x.size, role), x.atoms)
        return True

    def stat_site(self, node: fx.Node, x: Ann, where: tuple[str, str, int], kind: str, **extra: Any) -> None:
        """Record a statistic over the channel dim of ``x``: the masked model computes it over the kept
        channels only (graphs/masked.py), which is what the slimmed model computes."""
        owner, key, ordinal = where
        if owner in self.guarded:  # the masked model re-traces its forward, which branches on shapes
            self.atoms.freeze(x.atoms, f"{node.name}: statistics over channels in {owner!r}, whose forward "
                              "branches on a shape (traced for the example's shapes only)")  # fmt: skip
            return
        site = StatSite(owner, key, ordinal, kind, x.dim, x.size, dict(extra))
        self.stat_sites.append(site)
        self.atoms.union(self.atoms.param(owner, site.buffer, 0, x.size, "stat"), x.atoms)

    def layer_norm(
        self, node: fx.Node, x: Any, shape: tuple[int, ...], wb: list[Any], where: Any, owner: nn.Module | None
    ) -> Any:
        """LayerNorm (module or ``F.layer_norm``). Over the channel dim it is pruned exactly: the masked model
        normalizes over the kept channels (a statistics site), the slimmed one has a smaller
        ``normalized_shape``, which must be the owning module's attribute for slimming to update it."""
        inp = self.values.get(node.args[0])
        if not isinstance(x, Ann) or not isinstance(inp, torch.Tensor):
            return self.unknown(node) if self.inputs(node) else None
        first = inp.dim() - len(shape)
        if x.spread is not None:
            return self.unknown(node, f"{self.describe(node)} reads channels spread over several dims")
        if x.dim < first:
            others = [p for p in wb if p is not None and not isinstance(p, ParamRef)]
            return self.unknown(node) if others else x
        if where is None:
            return self.unknown(node, f"{self.describe(node)} normalizes over the channel dim outside a module")
        if not isinstance(owner, nn.LayerNorm) or tuple(owner.normalized_shape) != tuple(shape):
            return self.unknown(
                node,
                f"{self.describe(node)} normalizes over the channel dim with a normalized_shape that is not its "
                f"module's attribute (slimming could not update it)",
            )
        if not self.couple_params(node, x, wb, "norm", axis=x.dim - first):
            return None
        self.stat_site(node, x, where, "layer_norm", in_dims=inp.dim())
        return x

    def group_norm(self, node: fx.Node, x: Any, groups: Any, wb: list[Any], where: Any, owner: nn.Module | None) -> Any:
        """GroupNorm. One group per channel: per-channel statistics. One group (a LayerNorm over channels and
        positions): a statistics site. Otherwise whole groups are pruned (each group's channels are one unit),
        which leaves the statistics of the kept groups untouched; slimming lowers ``num_groups``."""
        if not isinstance(x, Ann) or x.dim != 1 or x.spread is not None or not isinstance(groups, int):
            return self.unknown(node, f"{self.describe(node)} reads a tensor whose channel dim is not dim 1")
        c = x.size
        if groups != c:
            if where is None or not isinstance(owner, nn.GroupNorm) or owner.num_groups != groups:
                return self.unknown(node, f"{self.describe(node)}: its group count is not a GroupNorm attribute")
        if not self.couple_params(node, x, wb, "norm"):
            return None
        if groups == 1:
            self.stat_site(node, x, where, "group_norm")
        elif groups != c:
            units = x.atoms.view(groups, c // groups)
            self.atoms.union(units.flatten(), units[:, :1].expand(groups, c // groups).flatten())
        return x

    def functional_layer(self, node: fx.Node) -> Any:
        """``F.linear`` / ``F.conv2d`` on a Linear's / Conv's own weight (timm's ``Linear`` calls F.linear in
        its forward): the layer's rule, when the weight and bias are that module's own parameters as they
        are (not computed from them) and a conv's ``groups`` is the module's."""
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        w, b = self.env.get(bound.get("weight")), self.env.get(bound.get("bias"))
        if (
            isinstance(w, ParamRef)
            and not w.lost
            and {(m, p) for m, p, _, _ in w.sources} == {(w.sources[0][0], "weight")}
        ):
            name = w.sources[0][0]
            m = self.modules.get(name)
            want = nn.Linear if node.target is F.linear else CONVS
            weight_ok = (
                isinstance(m, want)
                and tuple(w.shape) == tuple(m.weight.shape)
                and all(pd == vd for _, _, pd, vd in w.sources)
            )
            bias_ok = (b is None and bound.get("bias") is None and getattr(m, "bias", None) is None) or (
                isinstance(b, ParamRef) and m is not None and m.bias is not None
                and [(s[0], s[1]) for s in b.sources] == [(name, "bias")]
            )  # fmt: skip
            groups_ok = node.target is F.linear or bound.get("groups", 1) == getattr(m, "groups", None)
            if weight_ok and bias_ok and groups_ok:
                x = self.ann(node.args[0]) if node.args else None
                out = self.values.get(node)
                if node.target is F.linear:
                    return self.linear(node, name, m, x, out)
                return self.conv(node, name, m, x, out)
        return self.unknown(node)

    def _tensor_arg(self, a: Any) -> Any:
        """A tensor argument's parameter value (a ParamRef), ``True`` for any other tensor, None if no tensor."""
        if not isinstance(a, fx.Node) or not isinstance(self.values.get(a), torch.Tensor):
            return None
        e = self.env.get(a)
        return e if isinstance(e, ParamRef) else True

    def functional_norm(self, node: fx.Node) -> Any:
        """``F.batch_norm`` / ``F.instance_norm`` / ``F.layer_norm`` / ``F.group_norm`` on module attributes."""
        t = node.target
        x = self.ann(node.args[0]) if node.args else None
        if not isinstance(x, Ann):
            return self.unknown(node) if self.inputs(node) else None
        kind = _norm_kind(t)
        others = [a for a in self.inputs(node) if a is not x]
        if others:
            return self.unknown(node)
        if kind in ("layer_norm", "group_norm"):
            names = ("input", "normalized_shape" if kind == "layer_norm" else "num_groups", "weight", "bias")
            bound = dict(zip(names, node.args))
            bound.update({k: v for k, v in node.kwargs.items() if k in names})
            tensors = [self._tensor_arg(bound.get(k)) for k in ("weight", "bias")]
        else:  # every tensor argument after the input is per-channel (the order differs between forms)
            tensors = [self._tensor_arg(a) for a in [*node.args[1:], *node.kwargs.values()]]
            tensors = [v for v in tensors if v is not None]
        where = node.meta.get("pk_site")
        owner = self.modules.get(where[0]) if where else None
        kind = _norm_kind(t)
        if kind == "layer_norm":
            shape = bound.get("normalized_shape")
            shape = tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
            return self.layer_norm(node, x, shape, tensors, where, owner)
        if kind == "group_norm":
            return self.group_norm(node, x, bound.get("num_groups"), tensors, where, owner)
        if x.dim != 1 or x.spread is not None:
            return self.unknown(node, f"{self.describe(node)} reads a tensor whose channel dim is not dim 1")
        return x if self.couple_params(node, x, tensors, "norm") else None

    def softmax(self, node, x: Any, out: torch.Tensor, dim: int | None) -> Any:
        if not isinstance(x, Ann):
            return None
        if dim is None or dim % out.dim() == x.dim:
            return self.unknown(node, "softmax over the channel dim mixes channels")
        return x

    def passthrough(self, node: fx.Node, x: Any, out: Any) -> Any:
        """Channel-wise ops: the output has the input's channel dim, unchanged."""
        if not isinstance(x, Ann):
            return self.unknown(node) if self.inputs(node) else None
        inp = self.values.get(node.args[0])
        if x.spread is not None:
            if isinstance(out, torch.Tensor) and isinstance(inp, torch.Tensor) and out.shape == inp.shape:
                return x if len(self.inputs(node)) == 1 else self.unknown(node)
            return self.unknown(node, f"{self.describe(node)} reads channels spread over several dims")
        if (
            isinstance(out, torch.Tensor)
            and isinstance(inp, torch.Tensor)
            and out.dim() == inp.dim()
            and out.shape[x.dim] == x.size
        ):
            others = [a for a in self.inputs(node) if a is not x]
            if others:  # e.g. a second tensor argument: be safe
                return self.unknown(node)
            return x
        return self.unknown(node, f"{self.describe(node)} changes the channel dim")

    # -- functions and methods -------------------------------------------------------------------------
    def call_function(self, node: fx.Node) -> Any:
        t = node.target
        method = node.op == "call_method"
        if not method and t is shape_guard:  # a branch taken on shapes: exact only while they stay
            self.shape_guard(node)
            return None
        if method and t in SHAPE_METHODS or (not method and t is getattr):
            size = self.size_of(node)
            self.sizes_seen = self.sizes_seen or size is not None
            return size
        if self.sizes_seen:  # only models that read a channel count pay for looking
            counts = [a for a in node_args(node) if isinstance(self.env.get(a), (ChanCount, SizeOf))]
            if counts and not isinstance(self.values.get(node), torch.Tensor):
                return self.size_arith(node, counts)
            moves = (not method and t in MOVE_FUNCTIONS) or (method and t in MOVE_METHODS)
            if counts and not (moves and len(self.inputs(node)) == 1):
                # a tensor made with a channel count (torch.zeros(B, C), a view of a tensor without channels)
                self.check_sizes(node, None)
        if not method and t in _NORM_FUNCTIONS:
            return self.functional_norm(node)
        if not method and t in (F.linear, F.conv1d, F.conv2d, F.conv3d):
            return self.functional_layer(node)
        if not method and t in WINDOW_ATTENTION:
            return self.window_attention(node)
        if not method and t is swin._patch_merging_pad:
            x = self.ann(node.args[0])
            if isinstance(x, Ann) and x.spread is None and x.dim == self.values[node.args[0]].dim() - 1:
                return Ann(x.dim, torch.cat([x.atoms] * 4))  # four strided views side by side
            return self.unknown(node)
        if not self.inputs(node) and _reads_params(node, self.env):
            return self.param_expr(node)
        if (not method and t is torch.addcmul) or (method and t == "addcmul"):
            return self.binary(node, operands=list(node.args[:3]))
        if (not method and t in BINARY_FUNCTIONS) or (method and t in BINARY_METHODS):
            return self.binary(node)
        if (not method and t in (torch.cat, torch.concat, torch.concatenate)) or (method and t == "cat"):
            return self.cat(node)
        if not method and t is torch.stack:
            return self.stack(node)
        if (not method and t in REDUCE_FUNCTIONS) or (method and t in REDUCE_METHODS):
            return self.reduce(node)
        if (not method and t in (F.softmax, F.log_softmax, torch.softmax)) or (method and t == "softmax"):
            x = self.ann(node.args[0])
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            return self.softmax(node, x, self.values.get(node), dim)
        if not method and t is operator.getitem and isinstance(self.env.get(node.args[0]), (list, tuple)):
            seq = self.env[node.args[0]]
            idx = node.args[1]
            return seq[idx] if isinstance(idx, int) and -len(seq) <= idx < len(seq) else self.unknown(node)
        if (not method and t is torch.roll) or (method and t == "roll"):
            return self.roll(node)
        if (not method and t in MOVE_FUNCTIONS) or (method and t in MOVE_METHODS):
            return self.move(node)
        if (not method and t in PASS_FUNCTIONS) or (method and t in PASS_METHODS):
            x = self.ann(node.args[0]) if node.args else None
            return self.passthrough(node, x, self.values.get(node))
        if not self.inputs(node) and not _reads_params(node, self.env):
            return None
        return self.unknown(node)

    def binary(self, node: fx.Node, operands: list[Any] | None = None) -> Any:
        out = self.values.get(node)
        if not isinstance(out, torch.Tensor):
            return self.unknown(node)
        if operands is None:
            operands = list(node.args[:2]) + [node.kwargs[k] for k in ("other",) if k in node.kwargs]
        dims: set[int] = set()
        full: list[Ann] = []
        plain: list[tuple[Any, Any]] = []
        for a in operands:
            v = self.values.get(a) if isinstance(a, fx.Node) else a
            if not isinstance(v, torch.Tensor):
                continue
            e = self.env.get(a) if isinstance(a, fx.Node) else None
            shift = out.dim() - v.dim()
            if isinstance(e, Ann):
                od = e.dim + shift
                if v.shape[e.dim] == out.shape[od]:
                    dims.add(od)
                    full.append(e)
                # a size-1 channel dim broadcasts: it couples nothing
            else:
                plain.append((e, v))
        if not full:
            return None
        if len(dims) > 1:
            return self.unknown(node, "element-wise op between tensors whose channel dims differ")
        od = dims.pop()
        base = full[0]
        for other in full[1:]:
            self.atoms.union(other.atoms, base.atoms)
        for e, v in plain:
            pd = od - (out.dim() - v.dim())
            if pd < 0 or v.shape[pd] == 1:
                continue
            if isinstance(e, ParamRef) and v.shape[pd] == base.size and e.at(pd):
                for module, param, d in e.at(pd):
                    self.atoms.union(self.atoms.param(module, param, d, base.size, "param"), base.atoms)
                continue
            return self.unknown(node, "element-wise op with a tensor of unknown channel origin")
        return Ann(od, base.atoms)

    def cat(self, node: fx.Node) -> Any:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        out = self.values.get(node)
        if not isinstance(tensors, (list, tuple)) or not isinstance(out, torch.Tensor) or not isinstance(dim, int):
            return self.unknown(node)
        dim %= out.dim()
        anns = [self.env.get(t) if isinstance(t, fx.Node) else None for t in tensors]
        if not any(isinstance(a, Ann) for a in anns):
            return None
        cdims = {a.dim for a in anns if isinstance(a, Ann)}
        if len(cdims) > 1:
            return self.unknown(node, "concatenation of tensors whose channel dims differ")
        cd = cdims.pop()
        if cd == dim:  # channel concat: the output space is the ordered union of the inputs
            parts = []
            for t, a in zip(tensors, anns):
                if isinstance(a, Ann):
                    parts.append(a.atoms)
                    continue
                n = self.values[t].shape[dim]
                params = self.param_channels(a, dim - (out.dim() - self.values[t].dim()), n)
                if params is not None:  # a parameter's own channels (a learned token, a fixed embedding)
                    parts.append(params)
                    continue
                why = f"{node.name}: concatenated with a tensor of unknown channel origin"
                parts.append(self.atoms.fresh(n, f"{node.name} part", frozen=why))
            return Ann(dim, torch.cat(parts))
        first = next(a for a in anns if isinstance(a, Ann))
        for t, a in zip(tensors, anns):
            if isinstance(a, Ann):
                if a is not first:
                    self.atoms.union(a.atoms, first.atoms)
                continue
            # along another dim (a class token before the patch tokens): a parameter's channels join the space
            params = self.param_channels(a, cd - (out.dim() - self.values[t].dim()), first.size)
            if params is None:
                return self.unknown(node, "concatenation with a tensor of unknown channel origin")
            self.atoms.union(params, first.atoms)
        return first

    def param_channels(self, e: Any, dim: int, size: int) -> torch.Tensor | None:
        """The atoms of the parameter dims a parameter value ``e`` holds at ``dim`` (coupled together), or None
        if it is not a parameter value or holds none there."""
        if not isinstance(e, ParamRef) or e.lost or dim < 0 or dim >= len(e.shape) or e.shape[dim] != size:
            return None
        found = [self.atoms.param(m, p, d, size, "param") for m, p, d in e.at(dim)]
        if not found:
            return None
        for f in found[1:]:
            self.atoms.union(f, found[0])
        return found[0]

    def stack(self, node: fx.Node) -> Any:
        tensors = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        out = self.values.get(node)
        anns = [self.env.get(t) if isinstance(t, fx.Node) else None for t in tensors]
        if not all(isinstance(a, Ann) for a in anns) or len({a.dim for a in anns}) != 1:
            return self.unknown(node)
        dim %= out.dim()
        for a in anns[1:]:
            self.atoms.union(a.atoms, anns[0].atoms)
        cd = anns[0].dim
        return Ann(cd + 1 if dim <= cd else cd, anns[0].atoms)

    def reduce(self, node: fx.Node) -> Any:
        x = self.ann(node.args[0])
        inp, out = self.values.get(node.args[0]), self.values.get(node)
        if not isinstance(x, Ann):
            return self.unknown(node) if self.inputs(node) else None
        dim, keep = _reduce_args(node)
        if dim is None or not isinstance(inp, torch.Tensor):
            return self.unknown(node, "reduction over all dims mixes channels")
        dims = {d % inp.dim() for d in ([dim] if isinstance(dim, int) else dim)}
        if x.dim in dims:
            # over the kept channels in the masked model (a statistics site): exact, and the result has no
            # channel dim left (a kept size-1 dim broadcasts back without coupling anything)
            where = node.meta.get("pk_site")
            if where is None or x.spread is not None or len(self.inputs(node)) != 1:
                return self.unknown(node, "reduction over the channel dim mixes channels")
            self.stat_site(node, x, where, "reduce", dims=sorted(dims))
            return None
        nd = x.dim if keep else x.dim - sum(1 for d in dims if d < x.dim)
        outs = out if isinstance(out, tuple) else (out,)  # var_mean: (var, mean)
        if not all(isinstance(o, torch.Tensor) and o.dim() > nd and o.shape[nd] == x.size for o in outs):
            return self.unknown(node)
        return tuple(Ann(nd, x.atoms) for _ in outs) if isinstance(out, tuple) else Ann(nd, x.atoms)

    def shape_guard(self, node: fx.Node) -> None:
        """A branch the trace resolved on the example's shapes (``trace.shape_guard``): every channel count it
        reads is frozen, since slimming would change it; a read of another dim (``x.shape[-1]``) or of the
        rank leaves the channels prunable."""
        cond = node.args[0]
        for r in shape_condition(cond) or []:
            x = self.ann(r.args[0])
            if not isinstance(x, Ann):
                continue
            v = self.values.get(r.args[0])
            nd = v.dim() if isinstance(v, torch.Tensor) else None
            rank = r.target in ("dim", "ndimension") if r.op == "call_method" else r.args[1] == "ndim"
            if rank:  # pruning never changes a rank
                continue
            if r.op == "call_method" and (len(r.args) > 1 or "dim" in r.kwargs):
                d = r.kwargs.get("dim", r.args[1] if len(r.args) > 1 else None)
                safe = [d]
            else:  # x.shape / x.size(): safe only where each use indexes one dim
                safe = [u.args[1] if u.target is operator.getitem else None for u in r.users]
            if x.spread is None and nd and all(isinstance(d, int) and d % nd != x.dim for d in safe):
                continue
            self.atoms.freeze(x.atoms, f"{node.name}: a branch in {node.meta.get('pk_scope')!r} on this channel count")

    def size_of(self, node: fx.Node) -> Any:
        """``x.size()``, ``x.shape``, ``x.size(d)``: sizes whose channel entry is the channel count of ``x``
        (a ``ChanCount``), so a view that uses it can be checked to reshape those same channels."""
        x = self.ann(node.args[0]) if node.args else None
        if not isinstance(x, Ann) or x.spread is not None:
            return None
        if node.op == "call_function":  # getattr(x, "shape")
            return SizeOf(x) if node.args[1] == "shape" else None
        if node.target == "size":
            d = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            if d is None:
                return SizeOf(x)
            v = self.values.get(node.args[0])
            return ChanCount(x.atoms, False) if isinstance(d, int) and d % v.dim() == x.dim else None
        return None

    def size_arith(self, node: fx.Node, counts: list[fx.Node]) -> Any:
        """Indexing a ``SizeOf`` gives the channel count at the channel dim; arithmetic on a channel count
        (``C // heads``, ``3 * C``) is a derived count of the same channels."""
        src = self.env[counts[0]]
        if isinstance(src, SizeOf):
            if node.target is operator.getitem and len(counts) == 1 and isinstance(node.args[1], int):
                v = self.values.get(counts[0])
                n = len(v) if isinstance(v, (tuple, list, torch.Size)) else None
                if n and node.args[1] % n == src.x.dim:
                    return ChanCount(src.x.atoms, False)
            return None
        return ChanCount(src.atoms, True)

    def check_sizes(self, node: fx.Node, x: Ann | None) -> bool:
        """A view/reshape sized with the channel count of other channels (edgenext's XCA reshapes attention
        output with the C of its input): after slimming the two counts differ, so both are frozen. Where
        ``x``'s channels are another set of the same size, the check waits for every coupling
        (``finish_size_checks``); a new tensor sized with a channel count freezes those channels now."""
        foreign = []
        for a in node_args(node):
            cc = self.env.get(a)
            if isinstance(cc, ChanCount) and not (
                x is not None
                and len(cc.atoms) == x.size
                and torch.equal(torch.sort(cc.atoms).values, torch.sort(x.atoms).values)
            ):
                foreign.append(cc.atoms)
        if not foreign:
            return True
        why = f"{node.name}: {self.describe(node)} is sized with the channel count of other channels"
        if x is not None and x.spread is None and all(len(atoms) == x.size for atoms in foreign):
            self.size_checks += [(why, atoms, x.atoms) for atoms in foreign]
            return True
        if x is not None:
            self.atoms.freeze(x.atoms, why)
        for atoms in foreign:
            self.atoms.freeze(atoms, why)
        return False

    def param_expr(self, node: fx.Node) -> Any:
        """A value computed from parameters alone: element-wise arithmetic keeps each parameter dim where
        broadcasting puts it; views and reshapes are followed with labels, as for channels."""
        out = self.values.get(node)
        t = node.target
        method = node.op == "call_method"
        if not isinstance(out, torch.Tensor):
            return None
        elementwise = (not method and (t in BINARY_FUNCTIONS or t in PASS_FUNCTIONS or t in PARAM_UNARY_FUNCTIONS)) or (
            method and (t in BINARY_METHODS or t in PASS_METHODS or t in PARAM_UNARY_METHODS)
        )
        if elementwise:
            sources: list[tuple[str, str, int, int]] = []
            lost = False
            for a in [*node.args, *node.kwargs.values()]:
                e = self.env.get(a) if isinstance(a, fx.Node) else None
                if (
                    isinstance(a, fx.Node)
                    and isinstance(self.values.get(a), torch.Tensor)
                    and not isinstance(e, ParamRef)
                ):
                    return None  # mixed with a tensor not from parameters (a norm over a weight's dims...)
                if isinstance(e, ParamRef):
                    shift = out.dim() - len(e.shape)
                    sources += [(m, p, pd, vd + shift) for m, p, pd, vd in e.sources]
                    lost = lost or e.lost
            return ParamRef(tuple(out.shape), tuple(sources), lost)
        moves = (not method and t in MOVE_FUNCTIONS) or (method and t in MOVE_METHODS)
        src = self.env.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if not moves or not isinstance(src, ParamRef) or len(_param_refs(node, self.env)) != 1:
            return None
        sources = []
        lost = src.lost
        for m, p, pd, vd in src.sources:
            shape = [1] * len(src.shape)
            shape[vd] = src.shape[vd]
            labels = torch.arange(src.shape[vd]).reshape(shape).expand(src.shape)
            try:
                res = self.apply(node, labels)
            except Exception:
                try:
                    res = self.apply(node, labels.contiguous())
                except Exception:
                    return ParamRef(tuple(out.shape), (), True)
            if not isinstance(res, torch.Tensor):
                return None
            moving = [e for e in range(res.dim()) if res.shape[e] > 1 and not bool((res == res.narrow(e, 0, 1)).all())]
            idx = tuple(slice(None) if d in moving else 0 for d in range(res.dim()))
            if len(moving) == 1 and torch.equal(res[idx], torch.arange(src.shape[vd])):
                if self.literal_size(node, moving[0], self.atoms.param(m, p, pd, src.shape[vd], "param")):
                    lost = True  # a view to a literal size that slimming cannot update
                else:
                    sources.append((m, p, pd, moving[0]))
            else:
                lost = True
        return ParamRef(tuple(out.shape), tuple(sources), lost)

    def cut_by_attribute(self, node: fx.Node, x: Ann) -> bool:
        """A fixed cut of the channel dim whose sizes are attributes of the module making the call, read by
        its forward: ``torch.split(x, self.splits, 1)`` (mixnet), ``x.split(self.width, 1)`` (equal parts),
        ``x[:, :self.num_1x1_c]`` (dpn, rexnet's partial residual). Slimming then writes the kept counts into
        those attributes (``ChannelGraph.size_attrs``). Equal parts are pruned alike (channel i of each part
        together); several cuts by one attribute keep the same count before the cut (their prefixes are
        coupled). Returns False (the caller freezes) for anything else."""
        owner_name = node.meta.get("pk_scope")
        owner = self.modules.get(owner_name) if owner_name is not None else None
        if owner is None:
            return False
        source = _forward_source(type(owner))

        def attr_of(value: Any) -> str | None:
            names = [k for k, v in vars(owner).items() if not k.startswith("_") and type(v) is type(value)
                     and v == value and f"self.{k}" in source]  # fmt: skip
            return names[0] if len(names) == 1 else None

        c, t = x.size, node.target
        if t in ("split", torch.split):
            sizes = node.kwargs.get("split_size_or_sections", node.kwargs.get("split_size"))
            sizes = node.args[1] if sizes is None and len(node.args) > 1 else sizes
            dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
            inp = self.values.get(node.args[0])
            if not isinstance(dim, int) or dim % inp.dim() != x.dim:
                return False
            if isinstance(sizes, (list, tuple)) and all(isinstance(v, int) for v in sizes) and sum(sizes) == c:
                name = attr_of(list(sizes)) or attr_of(tuple(sizes))
                if name is None:
                    return False
                start = 0
                for i, n in enumerate(sizes):
                    self.size_attr(owner_name, name, i, x.atoms[start : start + n])
                    start += n
                return True
            if isinstance(sizes, int) and 0 < sizes < c and c % sizes == 0:
                n = c // sizes
                name, whole = attr_of(sizes), None
                if name is None:
                    # the size as a fraction of an attribute holding the whole count: timm's CSP stages split
                    # at ``self.expand_chs // 2``; slimming writes the kept total into it
                    whole = attr_of(c)
                    if whole is None or f"self.{whole} // {n}" not in source:
                        return False
                parts = x.atoms.view(n, sizes)
                for k in range(1, len(parts)):
                    self.atoms.union(parts[k], parts[0])
                if whole is None:
                    self.size_attr(owner_name, name, None, parts[0])
                else:
                    self.size_attr(owner_name, whole, None, x.atoms)
                return True
            return False
        if t is operator.getitem and isinstance(node.args[1], tuple) and len(node.args[1]) > x.dim:
            sl = node.args[1][x.dim]
            if not isinstance(sl, slice) or sl.step not in (None, 1) or Ellipsis in node.args[1][: x.dim]:
                return False
            for bound in (sl.start, sl.stop):
                if bound is None or bound == 0 or (isinstance(bound, int) and bound >= c):
                    continue
                name = attr_of(bound) if isinstance(bound, int) and bound > 0 else None
                if name is None:
                    return False
                self.size_attr(owner_name, name, None, x.atoms[:bound])
            return True
        return False

    def size_attr(self, module: str, attr: str, index: int | None, atoms: torch.Tensor) -> None:
        """Slimming writes the kept count of ``atoms`` into ``module.attr`` (at ``index`` of a list)."""
        key = f"_pk_size:{attr}" + ("" if index is None else f":{index}")
        self.atoms.union(self.atoms.param(module, key, 0, len(atoms), "stat"), atoms)
        self.size_attrs.append((module, attr, index, key))

    def literal_size(self, node: fx.Node, dim: int, atoms: torch.Tensor) -> bool:
        """Whether a view/reshape gives the channels ``atoms`` (at ``dim`` of its result) a size written as a
        number, which slimming would leave too large. When the whole size list is an attribute of the module
        making the call (MetaFormer's ``self.scale.view(self.shape)``), slimming updates that attribute
        instead (``ChannelGraph.size_attrs``), and the size is not fixed."""
        sizes = _view_sizes(node)
        if sizes is None or len(sizes) <= dim or not _is_literal(sizes[dim]):
            return False
        owner_name = node.meta.get("pk_scope")
        owner = self.modules.get(owner_name) if owner_name is not None else None
        if owner is None:
            return True
        # the attribute must hold these sizes and be read by the module's own code (a literal in the code
        # that happens to equal an attribute is not it): the whole size list (MetaFormer's
        # ``self.scale.view(self.shape)``), or the channel entry alone (torchvision ViT's
        # ``x.reshape(n, self.hidden_dim, n_h * n_w)``)
        source = _forward_source(type(owner))
        names = [k for k, v in vars(owner).items() if not k.startswith("_") and isinstance(v, (tuple, list))
                 and list(v) == list(sizes) and f"self.{k}" in source]  # fmt: skip
        if len(names) == 1 and all(isinstance(v, int) for v in sizes):
            self.size_attr(owner_name, names[0], dim, atoms)
            return False
        names = [k for k, v in vars(owner).items() if not k.startswith("_") and type(v) is int
                 and v == sizes[dim] and f"self.{k}" in source]  # fmt: skip
        if len(names) == 1 and sum(1 for v in sizes if v == sizes[dim]) == 1:
            self.size_attr(owner_name, names[0], None, atoms)
            return False
        return True

    def move(self, node: fx.Node) -> Any:
        """Data-movement ops (view, permute, flatten, slicing, chunk...): run the op on a tensor of channel
        labels and read off where each channel went."""
        anns = self.inputs(node)
        if not anns:
            return None
        src = node.args[0] if node.args else None
        x = self.env.get(src) if isinstance(src, fx.Node) else None
        inp = self.values.get(src) if isinstance(src, fx.Node) else None
        if len(anns) != 1 or not isinstance(x, Ann) or not isinstance(inp, torch.Tensor):
            return self.unknown(node)
        if self.sizes_seen and not self.check_sizes(node, x):
            return None
        shape = [1] * inp.dim()
        if x.spread is None:
            shape[x.dim] = x.size
            grid = torch.arange(x.size)
        else:
            dims, grid = x.spread
            for d, n in zip(dims, grid.shape):
                shape[d] = n
        # an expanded (stride-0) label tensor first: permutes and slices keep the zero strides, which tells
        # read_labels which dims cannot vary without comparing every element; ops that need real memory
        # (in-place writes, some views) get a materialized copy
        labels = grid.reshape(shape).expand(tuple(inp.shape))
        try:
            res = self.apply(node, labels)
        except Exception:
            labels = labels.contiguous()
            try:
                res = self.apply(node, labels)
            except Exception as e:
                why = f"{self.describe(node)} could not be followed ({type(e).__name__}: {e})"
                return self.unknown(node, why)
        total = len(torch.unique(grid))
        parts = [res] if isinstance(res, torch.Tensor) else [r for r in res if isinstance(r, torch.Tensor)]
        if any(_distinct(r, int(grid.max()) + 1) < total for r in parts):
            # a part of the channel dim is taken: after slimming the cut would fall elsewhere
            if _is_chunk(node) and len({r.shape for r in parts}) == 1:
                return self.couple_chunks(node, x, parts)
            if x.spread is None and self.cut_by_attribute(node, x):
                return (
                    tuple(self.read_labels(node, x, r) for r in res)
                    if isinstance(res, (list, tuple))
                    else (self.read_labels(node, x, res))
                )
            why = f"{self.describe(node)} takes a fixed part of the channel dim; slimming would move the cut"
            return self.unknown(node, why)
        if isinstance(res, torch.Tensor):
            ann = self.read_labels(node, x, res)
            if ann is not None and ann.spread is not None and x.spread is None:
                return self.couple_split(node, ann)
            sizes = _view_sizes(node)
            if ann is not None and ann.spread is None and sizes is not None and len(sizes) == res.dim():
                n = sizes[ann.dim]
                if self.literal_size(node, ann.dim, ann.atoms):
                    why = f"{self.describe(node)} reshapes the channels into a fixed size ({n})"
                    return self.unknown(node, why + ": slimming would break it")
            return ann
        if isinstance(res, (list, tuple)):
            return tuple(self.read_labels(node, x, r) if isinstance(r, torch.Tensor) else None for r in res)
        return self.unknown(node)

    def roll(self, node: fx.Node) -> Any:
        """``torch.roll`` over dims other than the channel dim (Swin's cyclic shift): pass-through. Rolling the
        channels themselves would move them by a count that slimming does not scale: frozen."""
        x = self.ann(node.args[0]) if node.args else None
        inp = self.values.get(node.args[0]) if node.args else None
        dims = node.kwargs.get("dims", node.args[2] if len(node.args) > 2 else None)
        if not isinstance(x, Ann) or x.spread is not None or dims is None or not isinstance(inp, torch.Tensor):
            return self.unknown(node)
        dims = [dims] if isinstance(dims, int) else list(dims)
        if any(not isinstance(d, int) or d % inp.dim() == x.dim for d in dims):
            return self.unknown(node, f"{self.describe(node)} rolls the channel dim")
        return x

    def apply(self, node: fx.Node, labels: torch.Tensor) -> Any:
        args = tuple(self.value(a) for a in node.args[1:])
        kwargs = {k: self.value(v) for k, v in node.kwargs.items()}
        if node.op == "call_method":
            return getattr(labels, node.target)(*args, **kwargs)
        if node.op == "call_module":
            return self.modules[node.target](labels, *args, **kwargs)
        return node.target(labels, *args, **kwargs)

    def couple_chunks(self, node: fx.Node, x: Ann, parts: list[torch.Tensor]) -> Any:
        """``x.chunk(n, dim=channels)``: the slimmed tensor is cut into n equal parts, so channel i of every
        chunk is pruned together with channel i of the others."""
        anns = [self.read_labels(node, x, r) for r in parts]
        if any(a is None or a.spread is not None for a in anns):
            return self.unknown(node, f"{self.describe(node)} could not be followed")
        for a in anns[1:]:
            self.atoms.union(a.atoms, anns[0].atoms)
        return tuple(anns)

    def couple_split(self, node: fx.Node, ann: Ann) -> Ann | None:
        """A view that splits the channel dim over several dims (channel shuffle: C -> (groups, C/groups)).

        After slimming only the dims whose size is computed at run time (from ``x.size()`` or -1) shrink;
        the literal ones stay. For the slimmed model to match, channels that share an index along the
        run-time dim are pruned together: they become one unit."""
        sizes = _view_sizes(node)
        dims, grid = ann.spread
        if sizes is None or max(dims) >= len(sizes):
            return self.unknown(node, f"{self.describe(node)} splits channels over several dims")
        dynamic = [i for i, d in enumerate(dims) if not _is_literal(sizes[d])]
        if len(dynamic) != 1:
            return self.unknown(
                node, f"{self.describe(node)} reshapes channels into fixed sizes: slimming would break it"
            )
        dyn = dynamic[0]
        for k in range(grid.shape[dyn]):
            unit = ann.atoms[grid.select(dyn, k).flatten()]
            self.atoms.union(unit, unit[:1].expand(len(unit)))
        return ann

    def read_labels(self, node: fx.Node, x: Ann, res: torch.Tensor) -> Ann | None:
        if res.numel() == 0:
            return None
        moving = [e for e in range(res.dim()) if res.shape[e] > 1 and res.stride(e) != 0]
        if len(moving) == 1:  # only one dim can vary (the others are broadcast): it holds the channels
            e = moving[0]
            return Ann(e, x.atoms[res[tuple(slice(None) if d == e else 0 for d in range(res.dim()))]])
        varying = [e for e in range(res.dim()) if not bool((res == res.narrow(e, 0, 1)).all())]
        if len(varying) > 1:  # the channel space now spans several dims
            index = tuple(slice(None) if e in varying else 0 for e in range(res.dim()))
            grid = res[index]
            present, grid = torch.unique(grid, return_inverse=True)
            return Ann(-1, x.atoms[present], (tuple(varying), grid))
        best = None
        for e in range(res.dim()):
            if res.shape[e] == 0:
                continue
            flat = res.movedim(e, 0).reshape(res.shape[e], -1)
            if bool((flat == flat[:, :1]).all()):
                labels = flat[:, 0]
                score = (len(torch.unique(labels)), e == x.dim)
                if best is None or score > best[0]:
                    best = (score, e, labels)
        if best is None:
            present = torch.unique(res)
            self.atoms.freeze(x.atoms[present], f"{node.name}: {self.describe(node)} scatters channels over dims")
            return None
        _, e, labels = best
        return Ann(e, x.atoms[labels])


def _distinct(labels: torch.Tensor, bound: int) -> int:
    """How many distinct labels in ``[0, bound)`` a tensor holds (a linear-time count, not a sort)."""
    if labels.numel() == 0:
        return 0
    return int(torch.count_nonzero(torch.bincount(labels.reshape(-1), minlength=bound)))


def _is_chunk(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "chunk") or node.target is torch.chunk


def _view_sizes(node: fx.Node) -> list[Any] | None:
    """The target sizes of a view/reshape node (ints or nodes), or None for other ops."""
    if node.op == "call_method" and node.target in ("view", "reshape"):
        sizes = list(node.args[1:])
    elif node.op == "call_function" and node.target is torch.reshape:
        sizes = list(node.args[1:]) or [node.kwargs.get("shape")]
    else:
        return None
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    return sizes


def _is_literal(size: Any) -> bool:
    """A view size written as a number (not -1, not computed from ``x.size()``): it stays the same after
    slimming, so channels on that dim cannot shrink."""
    return isinstance(size, int) and size > 0


def _reads_params(node: fx.Node, env: dict[fx.Node, Any]) -> bool:
    found = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(isinstance(env.get(n), ParamRef)) or n)
    return any(found)


_MHA_FORWARDS = (nn.MultiheadAttention.forward, PrunedMultiheadAttention.forward)

_NORM_FUNCTIONS = CHANNEL_NORM_FUNCTIONS | LAYER_NORM_FUNCTIONS | GROUP_NORM_FUNCTIONS


def _norm_kind(fn: Any) -> str:
    if fn in LAYER_NORM_FUNCTIONS:
        return "layer_norm"
    if fn in GROUP_NORM_FUNCTIONS:
        return "group_norm"
    return "instance_norm" if fn in (F.instance_norm, torch.instance_norm) else "batch_norm"


def _module_params(name: str, m: nn.Module, names: tuple[str, ...]) -> list[ParamRef | None]:
    """A module's own 1-d tensors as parameter values (None where absent)."""
    out: list[ParamRef | None] = []
    for p in names:
        t = getattr(m, p, None)
        out.append(ParamRef(tuple(t.shape), ((name, p, 0, 0),)) if isinstance(t, torch.Tensor) else None)
    return out


def _param_refs(node: fx.Node, env: dict[fx.Node, Any]) -> list[ParamRef]:
    found: list[ParamRef] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(env[n]) if isinstance(env.get(n), ParamRef) else n)
    return found


def _reduce_args(node: fx.Node) -> tuple[Any, bool]:
    """(dim, keepdim) of a reduction node; ``norm`` takes ``p`` before ``dim``."""
    a = list(node.args[1:])
    if node.target in ("norm", torch.norm):
        a = a[1:]
    dim = node.kwargs.get("dim", a[0] if a else None)
    keep = node.kwargs.get("keepdim", a[1] if len(a) > 1 else False)
    return dim, bool(keep)


@functools.cache
def _forward_source(cls: type) -> str:
    """The source of the methods ``cls`` runs (its own and inherited ones it does not override, not torch's):
    forward and the methods it calls (torchvision ViT's ``_process_input``), where a size attribute is read
    as ``self.<name>``. A parent's overridden forward is not among them."""
    parts = []
    for name in sorted(set(dir(cls))):
        fn = inspect.getattr_static(cls, name, None)
        fn = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
        if name == "__init__" or not inspect.isfunction(fn) or (fn.__module__ or "").startswith("torch."):
            continue  # __init__ sets attributes; only what runs on a forward pass reads them
        try:
            parts.append(inspect.getsource(fn))
        except (OSError, TypeError):
            pass
    return "\n".join(parts)
