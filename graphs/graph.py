"""The channel graph's data model: members, channel groups, frozen sets, and the ChannelGraph itself.

A *member* is one dimension of one parameter or buffer (``layer1.0.conv1.weight``, dim 0) and the
positions along it that belong to a group; ``channels[i]`` is the group channel that owns
``positions[i]``. One channel may own several positions (flatten -> Linear: H*W features per channel),
and one parameter dimension may be split between several groups (a conv reading a concatenation).

Everything is named by qualified module names, so a graph built on one model applies to any copy of it
(a deepcopy, a model loaded from a checkpoint, the ``.module`` of a DDP wrapper).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch import nn


@dataclass(frozen=True)
class Member:
    """Where a group's channels live in one tensor: ``module.param`` along ``dim``."""

    module: str  # qualified module name ("" for the root module)
    param: str  # parameter or buffer name on that module ("weight", "bias", "running_mean", ...)
    dim: int
    positions: torch.Tensor  # LongTensor [k]: indices along ``dim``
    channels: torch.Tensor  # LongTensor [k]: the group channel owning each position
    role: str = "out"  # "out" (producer side, e.g. conv weight dim 0), "in" (consumer), "norm", "param"

    @property
    def name(self) -> str:
        return f"{self.module}.{self.param}" if self.module else self.param

    @property
    def slice(self) -> slice | None:
        """The positions as a ``slice`` when they are contiguous and one per channel, else None."""
        p = self.positions
        if (
            len(p)
            and torch.equal(p, torch.arange(int(p[0]), int(p[0]) + len(p)))
            and torch.equal(self.channels, torch.arange(len(p)))
        ):
            return slice(int(p[0]), int(p[0]) + len(p))
        return None

    def tensor(self, model: nn.Module) -> torch.Tensor:
        """The parameter or buffer this member lives in, looked up on ``model`` (or any copy of it)."""
        return lookup_tensor(model, self.module, self.param)

    def describe(self) -> str:
        s = self.slice
        where = f"[{s.start}:{s.stop}]" if s is not None else f"[{len(self.positions)} positions]"
        return f"{self.name} dim {self.dim} {where} ({self.role})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "param": self.param,
            "dim": self.dim,
            "role": self.role,
            "positions": self.positions.tolist(),
            "channels": self.channels.tolist(),
        }


@dataclass
class StatSite:
    """A statistic computed over a channel dim (LayerNorm or one-group GroupNorm over channels, a mean or
    variance over channels): the masked model computes it over the kept channels only, as the slimmed model
    does. ``module`` is the module whose forward makes the call, ``key``/``ordinal`` which call it is there
    (the ``ordinal``-th call of the op ``key``), ``dim`` the channel dim of its input, ``size`` its channels.
    The kept-channel mask lives in a non-persistent buffer ``buffer`` of that module while masks apply."""

    module: str
    key: str
    ordinal: int
    kind: str  # "layer_norm", "group_norm" (one group), "reduce" or "weight_std" (a filter over its inputs)
    dim: int
    size: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def buffer(self) -> str:
        return f"_pk_keep_{self.key}_{self.ordinal}"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("module", "key", "ordinal", "kind", "dim", "size", "extra")}


@dataclass
class ChannelGroup:
    """A set of coupled channels: pruning channel ``i`` removes it from every member at once."""

    id: str
    size: int
    members: list[Member]
    producers: list[str] = field(default_factory=list)  # modules whose outputs create these channels
    reasons: list[str] = field(default_factory=list)  # why it is frozen (empty for a prunable group)

    @property
    def frozen(self) -> bool:
        return bool(self.reasons)

    def members_of(self, role: str) -> list[Member]:
        return [m for m in self.members if m.role == role]

    def __repr__(self) -> str:
        state = f"frozen: {self.reasons[0]}" if self.reasons else "prunable"
        return f"ChannelGroup({self.id!r}, size={self.size}, members={len(self.members)}, {state})"

    def summary(self) -> str:
        lines = [repr(self)]
        lines += [f"    {m.describe()}" for m in self.members]
        lines += [f"    reason: {r}" for r in self.reasons[1:]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "producers": self.producers,
            "frozen": self.frozen,
            "reasons": self.reasons,
            "members": [m.to_dict() for m in self.members],
        }


class GraphModelError(ValueError, KeyError):
    """A channel graph used with a model it was not built from (other parameter names or shapes)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ChannelGraph:
    """Prunable channel groups and frozen channel sets of one model, held in a networkx graph.

    ``nx_graph`` has one node per group (attribute ``group``) and one node per module that holds a member
    (attribute ``kind="module"``); an edge joins a group to every module its channels live in.
    """

    def __init__(
        self,
        groups: list[ChannelGroup],
        frozen: list[ChannelGroup],
        model_name: str = "model",
        macs_terms: list[tuple[Any, ...]] | None = None,
        stats: list[StatSite] | None = None,
        stat_members: dict[tuple[str, str], list[tuple[str, Member]]] | None = None,
        opaque: dict[str, str] | None = None,
        size_attrs: list[tuple[str, str, int, str]] | None = None,
        param_shapes: dict[str, tuple[int, ...]] | None = None,
        shape_branches: list[str] | None = None,
    ):
        self.groups = groups
        # submodules whose forward branches on shapes, traced along the branch the example inputs take
        self.shape_branches = list(shape_branches or [])
        # {qualified parameter name: shape} of the model the graph was built from (None: not recorded, e.g. a
        # plan written by an older prunekit); see check_model
        self.param_shapes = None if param_shapes is None else {k: tuple(v) for k, v in param_shapes.items()}
        self.frozen = frozen
        self.model_name = model_name
        # statistics over channels, and which group channels each one's positions hold (prunable groups only)
        self.stats = list(stats or [])
        self.stat_members = dict(stat_members or {})
        # submodules kept whole because fx could not trace them: {qualified name: why}
        self.opaque = dict(opaque or {})
        # module attributes holding a channel count that slimming must update: (module, attribute, index in
        # it, the stat_members key whose kept channels give the new count)
        self.size_attrs = [tuple(a) for a in size_attrs or []]
        # (conv/linear module, MACs per kept (out, in) weight pair per sample, weight.shape[0], weight.shape[1])
        self.macs_terms = list(macs_terms or [])
        self._by_id = {g.id: g for g in groups + frozen}
        self._members_at: dict[tuple[str, str, int], list[tuple[str, torch.Tensor]]] = {}
        for grp in groups:
            for m in grp.members:
                self._members_at.setdefault((m.module, m.param, m.dim), []).append((grp.id, m.channels))
        self._nx: nx.Graph | None = None

    @property
    def nx_graph(self) -> nx.Graph:
        """The networkx graph (see the class docstring), built on first use: pruning and slimming never read
        it, and building it is a fifth of a DenseNet-121 graph build."""
        if getattr(self, "_nx", None) is None:
            g = nx.Graph()
            for grp in self.groups + self.frozen:
                g.add_node(grp.id, kind="group", group=grp, size=grp.size, frozen=grp.frozen)
                # a module holds several members of a group (weight, bias, running stats): one node, one edge
                mods = dict.fromkeys(f"module:{m.module}" for m in grp.members)
                g.add_nodes_from(mods, kind="module")
                g.add_edges_from((grp.id, node) for node in mods)
            self._nx = g
        return self._nx

    def __getitem__(self, group_id: str) -> ChannelGroup:
        try:
            return self._by_id[group_id]
        except KeyError:
            raise KeyError(f"no channel group {group_id!r} in this graph; see graph.groups for the ids") from None

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._by_id

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def total_channels(self) -> int:
        return sum(g.size for g in self.groups)

    def __repr__(self) -> str:
        return (
            f"ChannelGraph({self.model_name}: {len(self.groups)} prunable groups, "
            f"{self.total_channels} prunable channels, {len(self.frozen)} frozen)"
        )

    def summary(self, members: bool = False) -> str:
        lines = [repr(self), "prunable groups:"]
        for g in self.groups:
            lines.append("  " + (g.summary() if members else repr(g)))
        lines.append("frozen:")
        for g in self.frozen:
            lines.append("  " + (g.summary() if members else repr(g)))
        if self.opaque:
            lines.append("opaque (fx could not trace them: kept whole, their boundary channels frozen unless noted):")
            lines += [f"  {name}: {why}" for name, why in self.opaque.items()]
        if self.shape_branches:
            lines.append("traced along the example's branch (a condition on shapes; channel counts it reads frozen):")
            lines += [f"  {name}" for name in self.shape_branches]
        return "\n".join(lines)

    def kept_count(self, module: str, key: str, size: int, keep: dict[str, torch.Tensor]) -> int:
        """How many of the ``size`` channel positions recorded under (module, key) ``keep`` keeps."""
        pruned = 0
        for gid, m in self.stat_members.get((module, key), ()):
            k = keep.get(gid)
            if k is not None:
                pruned += int((~k[m.channels]).sum())
        return size - pruned

    def stat_masks(self, keep: dict[str, torch.Tensor]) -> dict[tuple[str, str], torch.Tensor]:
        """{(module, buffer): kept-channel mask} of every statistics site, for a validated ``keep``."""
        out = {}
        for site in self.stats:
            mask = torch.ones(site.size, dtype=torch.bool)
            for gid, m in self.stat_members.get((site.module, site.buffer), ()):
                k = keep.get(gid)
                if k is not None:
                    mask[m.positions] = k[m.channels]
            out[(site.module, site.buffer)] = mask
        return out

    def validate_keep(self, keep: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``keep`` checked and normalized to {group id: bool tensor}; a clear error for unknown or frozen
        ids, masks of the wrong length or dtype, and masks that keep no channel."""
        if not isinstance(keep, dict):
            raise TypeError(f"keep must be a dict {{group id: bool mask}}, got {type(keep).__name__}")
        out: dict[str, torch.Tensor] = {}
        for gid, mask in keep.items():
            grp = self._by_id.get(gid)
            if grp is None:
                close = difflib.get_close_matches(str(gid), list(self._by_id), n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see graph.groups for the ids"
                raise KeyError(f"keep names an unknown channel group {gid!r}{hint}")
            t = torch.as_tensor(mask)
            if t.dtype != torch.bool:
                if t.dtype.is_floating_point or t.numel() and not bool(((t == 0) | (t == 1)).all()):
                    raise TypeError(f"keep[{gid!r}] must be a bool mask (True = keep), got dtype {t.dtype}")
                t = t.bool()
            if t.dim() != 1 or len(t) != grp.size:
                raise ValueError(f"keep[{gid!r}] has shape {tuple(t.shape)}; group {gid!r} has {grp.size} channels")
            if grp.frozen:
                if not bool(t.all()):
                    raise ValueError(f"group {gid!r} is frozen and cannot be pruned: {grp.reasons[0]}")
                continue
            if not bool(t.any()):
                raise ValueError(f"keep[{gid!r}] keeps no channel; every group must keep at least one")
            out[gid] = t.cpu()
        return out

    def kept_positions(self, module: str, param: str, dim: int, size: int, keep: dict[str, torch.Tensor]) -> int:
        """How many of the ``size`` positions of ``module.param`` along ``dim`` survive ``keep``."""
        pruned = 0
        for gid, channels in self._members_at.get((module, param, dim), ()):
            mask = keep.get(gid)
            if mask is not None:
                pruned += int((~mask[channels]).sum())
        return size - pruned

    def macs(self, keep: dict[str, Any] | None = None) -> int:
        """Conv/linear MACs of one sample under ``keep`` (None: the dense model); exact for those layers."""
        keep = self.validate_keep(keep) if keep else {}
        total = 0
        for module, coef, n0, n1, *param in self.macs_terms:  # (..., param) where the weight is not "weight"
            p = param[0] if param else "weight"
            k0 = self.kept_positions(module, p, 0, n0, keep)
            k1 = self.kept_positions(module, p, 1, n1, keep)
            total += coef * k0 * k1
        return total

    def check_model(self, model: nn.Module) -> None:
        """Raise GraphModelError (a ValueError) unless ``model`` has the parameters (names and shapes) of the
        model this graph was built from: a graph applies to copies of its own model only (deepcopy,
        checkpoint, DDP)."""
        if self.param_shapes is None:
            return
        have = {n: tuple(p.shape) for n, p in model.named_parameters() if not _uninitialized(p)}
        fix = "build this model's own graph with pk.build_graph(model, example_inputs)"
        what = f"this {type(model).__name__} is not the model the graph was built on"
        for name, shape in self.param_shapes.items():
            if name not in have:
                raise GraphModelError(f"{what}: it has no parameter {name}; {fix}")
            if have[name] != shape:
                raise GraphModelError(
                    f"{what}: {name} has shape {have[name]} here and {shape} there (is this model slimmed "
                    f"already?); {fix}"
                )
        extra = [n for n in have if n not in self.param_shapes]
        if extra:
            more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
            raise GraphModelError(f"{what}: it has parameters that one had not ({', '.join(extra[:3])}{more}); {fix}")

    def full_keep(self) -> dict[str, torch.Tensor]:
        """A keep dict that keeps every channel of every prunable group."""
        return {g.id: torch.ones(g.size, dtype=torch.bool) for g in self.groups}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "groups": [g.to_dict() for g in self.groups],
            "frozen": [g.to_dict() for g in self.frozen],
            "macs_terms": [list(t) for t in self.macs_terms],
            "stats": [s.to_dict() for s in self.stats],
            "stat_members": [
                {"module": k[0], "buffer": k[1], "group": gid, **m.to_dict()}
                for k, lst in self.stat_members.items()
                for gid, m in lst
            ],
            "opaque": self.opaque,
            "shape_branches": self.shape_branches,
            "size_attrs": [list(a) for a in self.size_attrs],
            "param_shapes": None if self.param_shapes is None else {k: list(v) for k, v in self.param_shapes.items()},
        }

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelGraph:
        def member(m: dict[str, Any]) -> Member:
            return Member(
                m["module"],
                m["param"],
                m["dim"],
                torch.tensor(m["positions"], dtype=torch.long),
                torch.tensor(m["channels"], dtype=torch.long),
                m["role"],
            )

        def grp(d: dict[str, Any]) -> ChannelGroup:
            return ChannelGroup(d["id"], d["size"], [member(m) for m in d["members"]], d["producers"], d["reasons"])

        terms = [tuple(t) for t in data.get("macs_terms", [])]
        groups, frozen = [grp(d) for d in data["groups"]], [grp(d) for d in data["frozen"]]
        stats = [StatSite(**d) for d in data.get("stats", [])]
        stat_members: dict[tuple[str, str], list[tuple[str, Member]]] = {}
        for d in data.get("stat_members", []):
            stat_members.setdefault((d["module"], d["buffer"]), []).append((d["group"], member(d)))
        return cls(
            groups,
            frozen,
            data.get("model", "model"),
            terms,
            stats,
            stat_members,
            data.get("opaque", {}),
            data.get("size_attrs", []),
            data.get("param_shapes"),
            data.get("shape_branches", []),
        )

    def to_dot(self, path: str | None = None) -> str:
        """Graphviz DOT text: groups as boxes (grey when frozen), modules as ellipses."""
        lines = [f'graph "{self.model_name}" {{', "  rankdir=LR;"]
        for node, attrs in self.nx_graph.nodes(data=True):
            if attrs["kind"] == "group":
                style = ', style=filled, fillcolor="#dddddd"' if attrs["frozen"] else ""
                lines.append(f'  "{node}" [shape=box, label="{node}\\n{attrs["size"]} ch"{style}];')
            else:
                lines.append(f'  "{node}" [shape=ellipse, label="{node[len("module:") :]}"];')
        for a, b in self.nx_graph.edges():
            lines.append(f'  "{a}" -- "{b}";')
        lines.append("}")
        text = "\n".join(lines) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text


def lookup_tensor(model: nn.Module, module: str, param: str) -> torch.Tensor:
    """``model.<module>.<param>`` (wrappers removed), or a KeyError that says the graph does not fit."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    try:
        mod = model.get_submodule(module) if module else model
    except AttributeError:
        mod = None
    t = getattr(mod, param, None)
    if not isinstance(t, torch.Tensor):
        raise KeyError(f"{module or '<root>'} has no tensor {param!r}: is this the model the graph was built on?")
    return t


def _uninitialized(p: torch.Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter)
