"""The coupling rules: one pass over the fx graph that annotates every tensor with its channel atoms and
couples (unions) atoms that must be pruned together. Anything the rules do not understand on a channel
path freezes the channels involved, with the node and op as the reason; nothing is guessed."""

from __future__ import annotations

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
from .trace import Traced

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

REDUCE_FUNCTIONS: set[Any] = {torch.mean, torch.sum, torch.amax, torch.amin}
REDUCE_METHODS = {"mean", "sum", "amax", "amin"}

# values these return carry no channel data
SHAPE_METHODS = {"size", "dim", "numel", "shape", "device", "dtype", "ndimension"}

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class MacsTerm:
    """MACs of one conv/linear call: ``coef * kept(weight dim 0) * kept(weight dim 1)`` per sample."""

    module: str
    coef: int


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
                return ParamRef(module, param, tuple(v.shape))
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
        if isinstance(m, CONVS):
            return self.conv(node, name, m, x, out)
        if isinstance(m, nn.Linear):
            return self.linear(node, name, m, x, out)
        if isinstance(m, NORMS) or (isinstance(m, INSTANCE_NORMS) and m.affine):
            return self.channel_norm(node, name, m, x, m.num_features)
        if isinstance(m, INSTANCE_NORMS):
            return self.passthrough(node, x, out)
        if isinstance(m, nn.GroupNorm):
            if m.num_groups == m.num_channels:
                return self.channel_norm(node, name, m, x, m.num_channels)
            return self.unknown(node, f"GroupNorm {name} normalizes over groups of channels (groups={m.num_groups})")
        if isinstance(m, nn.LayerNorm):
            return self.layer_norm(node, name, m, x, out)
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

    def conv(self, node: fx.Node, name: str, m: nn.Conv2d, x: Any, out: torch.Tensor) -> Ann:
        A = self.atoms
        cin, g = m.in_channels, m.groups
        ok_in = isinstance(x, Ann) and x.dim == 1 and x.size == cin
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

    def layer_norm(self, node, name: str, m: nn.LayerNorm, x: Any, out: torch.Tensor) -> Any:
        if not isinstance(x, Ann):
            return None
        first_normed = out.dim() - len(m.normalized_shape)
        if x.dim >= first_normed:
            return self.unknown(
                node, f"LayerNorm {name} normalizes over the channel dim: pruning would change its statistics"
            )
        return x

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
        if method and t in SHAPE_METHODS or (not method and t is getattr):
            return None
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
        if (not method and t in MOVE_FUNCTIONS) or (method and t in MOVE_METHODS):
            return self.move(node)
        if (not method and t in PASS_FUNCTIONS) or (method and t in PASS_METHODS):
            x = self.ann(node.args[0]) if node.args else None
            return self.passthrough(node, x, self.values.get(node))
        if not self.inputs(node) and not _reads_params(node, self.env):
            return None
        return self.unknown(node)

    def binary(self, node: fx.Node) -> Any:
        out = self.values.get(node)
        if not isinstance(out, torch.Tensor):
            return self.unknown(node)
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
            if isinstance(e, ParamRef) and v.shape[pd] == base.size:
                self.atoms.union(self.atoms.param(e.module, e.param, pd, base.size, "param"), base.atoms)
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
                else:
                    n = self.values[t].shape[dim]
                    parts.append(
                        self.atoms.fresh(
                            n,
                            f"{node.name} part",
                            frozen=f"{node.name}: concatenated with a tensor of unknown channel origin",
                        )
                    )
            return Ann(dim, torch.cat(parts))
        if any(not isinstance(a, Ann) for a in anns):
            return self.unknown(node, "concatenation with a tensor of unknown channel origin")
        first = anns[0]
        for a in anns[1:]:
            self.atoms.union(a.atoms, first.atoms)
        return first

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
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if dim is None or not isinstance(inp, torch.Tensor):
            return self.unknown(node, "reduction over all dims mixes channels")
        dims = {d % inp.dim() for d in ([dim] if isinstance(dim, int) else dim)}
        if x.dim in dims:
            return self.unknown(node, "reduction over the channel dim mixes channels")
        nd = x.dim if keep else x.dim - sum(1 for d in dims if d < x.dim)
        if not isinstance(out, torch.Tensor) or out.shape[nd] != x.size:
            return self.unknown(node)
        return Ann(nd, x.atoms)

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
            why = f"{self.describe(node)} takes a fixed part of the channel dim; slimming would move the cut"
            return self.unknown(node, why)
        if isinstance(res, torch.Tensor):
            ann = self.read_labels(node, x, res)
            if ann is not None and ann.spread is not None and x.spread is None:
                return self.couple_split(node, ann)
            sizes = _view_sizes(node)
            if ann is not None and ann.spread is None and sizes is not None and len(sizes) == res.dim():
                n = sizes[ann.dim]
                if _is_literal(n):
                    why = f"{self.describe(node)} reshapes the channels into a fixed size ({n})"
                    return self.unknown(node, why + ": slimming would break it")
            return ann
        if isinstance(res, (list, tuple)):
            return tuple(self.read_labels(node, x, r) if isinstance(r, torch.Tensor) else None for r in res)
        return self.unknown(node)

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
