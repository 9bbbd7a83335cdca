"""The Strategy interface: what a pruning strategy implements and what it sees.

A strategy decides three things, each a method the ``PruningController`` calls at the steps of the
strategy's ``schedule``:

    allocate(state, budget) -> {group id: channels to keep}      how wide each group stays
    prune(state, group, keep) -> BoolTensor[group.size]          which channels stay active
    regrow(state, group, count) -> LongTensor                    which pruned channels come back

The base class gives uniform allocation, no regrow and a one-shot schedule at the start of training, so a
minimal custom strategy implements only ``prune``:

    @pk.register_strategy("l1")
    class L1(pk.Strategy):
        '''Keep the channels with the largest L1 norm.'''
        def prune(self, state, group, keep):
            return top_k_mask(state.channel_norms(group, p=1), keep)

``PruningState`` is the strategy's view of the run: the model, the channel graph, the current masks, the
step/epoch, the most-recently-used (MRU) values of pruned channels and a seeded ``torch.Generator``.
``Budget`` is what the controller must reach (a global channel sparsity or a fraction of MACs to keep).
Strategy parameters are declared with ``Param`` and validated when the strategy is constructed.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from prunekit.graphs import ChannelGraph, ChannelGroup
from prunekit.graphs.graph import Member, lookup_tensor

__all__ = [
    "Budget",
    "MRUStore",
    "Param",
    "ParamError",
    "PruningState",
    "Schedule",
    "Strategy",
    "global_ranking_counts",
    "is_coupled",
    "top_k_mask",
    "uniform_counts",
]


# ---------------------------------------------------------------------------------------------- params


class ParamError(ValueError, TypeError):
    """A strategy parameter is unknown, of the wrong type or out of range; the message names it."""


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Param:
    """Declaration of one strategy parameter: type, default, allowed range or choices, one-line help.

    ``min``/``max`` are inclusive bounds; ``min_exclusive``/``max_exclusive`` make them strict. A default
    of ``None`` means the parameter is optional (None is then a valid value).
    """

    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    min_exclusive: bool = False
    max_exclusive: bool = False

    def describe(self) -> str:
        """``float in [0, 1], default 0.3``-style summary for listings."""
        parts = [self.type.__name__]
        if self.choices is not None:
            parts.append("one of " + "|".join(map(str, self.choices)))
        if self.min is not None or self.max is not None:
            lo = "(" if self.min_exclusive else "["
            hi = ")" if self.max_exclusive else "]"
            lo_v = "-inf" if self.min is None else f"{self.min:g}"
            hi_v = "inf" if self.max is None else f"{self.max:g}"
            parts.append(f"in {lo}{lo_v}, {hi_v}{hi}")
        return " ".join(parts) + f", default {self.default!r}"

    def validate(self, name: str, value: Any, owner: str = "strategy") -> Any:
        """``value`` converted to the declared type, or a ParamError naming ``owner``'s parameter ``name``."""
        where = f"{owner}: parameter {name!r}"
        if value is None:
            if self.default is None:
                return None
            raise ParamError(f"{where} must be {_article(self.type.__name__)}, got None")
        value = self._convert(value, where)
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamError(f"{where} must be one of {list(self.choices)}, got {value!r}{hint}")
        if self.min is not None and (value < self.min or (self.min_exclusive and value == self.min)):
            raise ParamError(f"{where} must be {'>' if self.min_exclusive else '>='} {self.min:g}, got {value!r}")
        if self.max is not None and (value > self.max or (self.max_exclusive and value == self.max)):
            raise ParamError(f"{where} must be {'<' if self.max_exclusive else '<='} {self.max:g}, got {value!r}")
        return value

    def _convert(self, value: Any, where: str) -> Any:
        t = self.type
        bad = ParamError(f"{where} must be {_article(t.__name__)}, got {value!r} ({type(value).__name__})")
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise bad
        if t is int:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    raise bad from None
            raise bad
        if t is float:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, (int, float)):
                out = float(value)
            elif isinstance(value, str):
                try:
                    out = float(value.strip())
                except ValueError:
                    raise bad from None
            else:
                raise bad
            if not math.isfinite(out):
                raise ParamError(f"{where} must be a finite number, got {value!r}")
            return out
        if t is str:
            if isinstance(value, str):
                return value
            raise bad
        if isinstance(value, t):
            return value
        raise bad


# ---------------------------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class Budget:
    """What the controller must reach: exactly one of

    - ``sparsity``: the global fraction of prunable channels removed (0 <= S < 1),
    - ``macs``: the fraction of the dense model's conv/linear MACs to KEEP (0 < M <= 1), e.g. 0.5, or
    - ``latency``: the fraction of the dense model's latency to KEEP (0 < L < 1), measured on the run's
      device by timing slimmed candidates (the controller needs a ``latency_timer``; see prunekit.latency).

    ``round_to``: kept channels per group are a multiple of this (groups smaller than it stay whole);
    every group keeps at least one channel. With a latency budget it may be ``"auto"``: the controller
    times a few candidates (``prunekit.latency.ROUND_TO_CANDIDATES``) and keeps the fastest.
    """

    sparsity: float | None = None
    macs: float | None = None
    round_to: int | str = 1
    latency: float | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("sparsity", "macs", "latency") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "Budget needs exactly one of sparsity= (fraction of prunable channels removed, e.g. 0.5), "
                "macs= (fraction of dense MACs to keep, e.g. 0.5) or latency= (fraction of the dense latency to "
                f"keep, e.g. 0.6); got sparsity={self.sparsity!r}, macs={self.macs!r}, latency={self.latency!r}"
            )
        if self.latency is not None:
            if isinstance(self.latency, bool) or not isinstance(self.latency, (int, float)):
                raise ValueError(f"Budget latency must be a number in (0, 1), got {self.latency!r}")
            if not 0.0 < float(self.latency) < 1.0:
                raise ValueError(
                    f"Budget latency is the fraction of the dense model's latency to KEEP and must be in (0, 1), "
                    f"got {self.latency!r}"
                    + ("; for 'remove 30%' write latency=0.7" if float(self.latency) > 1 else "")
                )
            object.__setattr__(self, "latency", float(self.latency))
        if self.sparsity is not None:
            if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
                raise ValueError(f"Budget sparsity must be a number in [0, 1), got {self.sparsity!r}")
            if not 0.0 <= float(self.sparsity) < 1.0:
                raise ValueError(
                    f"Budget sparsity must be in [0, 1) (the fraction of channels removed), got {self.sparsity!r}"
                )
            object.__setattr__(self, "sparsity", float(self.sparsity))
        if self.macs is not None:
            if isinstance(self.macs, bool) or not isinstance(self.macs, (int, float)):
                raise ValueError(f"Budget macs must be a number in (0, 1], got {self.macs!r}")
            if not 0.0 < float(self.macs) <= 1.0:
                raise ValueError(
                    f"Budget macs is the fraction of dense MACs to KEEP and must be in (0, 1], got {self.macs!r}"
                    + ("; for 'remove 30%' write macs=0.7" if float(self.macs) > 1 else "")
                )
            object.__setattr__(self, "macs", float(self.macs))
        if self.round_to == "auto":
            if self.latency is None:
                raise ValueError(
                    "Budget round_to='auto' picks the fastest rounding by timing candidates, so it needs a latency "
                    "budget (latency=...); give an integer round_to with sparsity= or macs="
                )
        elif isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ValueError(
                f"Budget round_to must be an integer >= 1 (or 'auto' with latency=), got {self.round_to!r}"
            )

    def with_sparsity(self, sparsity: float, round_to: int | None = None) -> Budget:
        """The same budget expressed as a global channel sparsity (clamped to [0, 1)); ``round_to`` replaces
        the budget's own (needed when that is ``"auto"``: the controller passes the rounding it chose)."""
        r = self.round_to if round_to is None else round_to
        if r == "auto":
            raise ValueError(
                "Budget round_to='auto' must be resolved to an integer first (with_sparsity(s, round_to=r))"
            )
        return Budget(sparsity=min(max(float(sparsity), 0.0), 1.0 - 1e-12), round_to=r)

    def round_keep(self, keep: float, size: int, offset: float = 0.5) -> int:
        """``keep`` channels of a group of ``size`` rounded to a multiple of ``round_to``, in [1, size]:
        ``floor(keep / round_to + offset) * round_to`` (offset 0.5: round half up).

        Keeping the whole group is always allowed (its width does not change)."""
        if keep >= size:
            return size
        r = self.round_to
        if size <= r:
            return size
        k = int(math.floor(keep / r + offset)) * r
        return max(r, min(k, size), 1)

    def describe(self) -> str:
        """ "sparsity 0.5", "MACs 0.3" (kept), "latency 0.6" (kept), with ", round_to N" when N is not 1."""
        if self.sparsity is not None:
            what = f"sparsity {self.sparsity:g}"
        elif self.macs is not None:
            what = f"MACs {self.macs:g}"
        else:
            what = f"latency {self.latency:g}"
        return what + (f", round_to {self.round_to}" if self.round_to != 1 else "")


# ---------------------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Schedule:
    """The optimizer steps at which the controller runs an event (allocate, prune, regrow).

    Step 0 is the start of training (``controller.start``); step n is after the n-th optimizer step.
    """

    steps: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        steps = tuple(sorted({int(s) for s in self.steps}))
        if any(s < 0 for s in steps):
            raise ValueError(f"schedule steps must be >= 0, got {list(steps)}")
        object.__setattr__(self, "steps", steps)

    @classmethod
    def once(cls, step: int = 0) -> Schedule:
        """One event at ``step`` (0: before training)."""
        return cls((step,))

    @classmethod
    def every(cls, interval: int, stop: int, start: int = 0, include_stop: bool = True) -> Schedule:
        """Events at start, start + interval, ... up to ``stop`` (and at ``stop`` itself when asked)."""
        if interval < 1:
            raise ValueError(f"schedule interval must be >= 1 step, got {interval}")
        steps = list(range(start, stop + 1, interval))
        if include_stop and stop >= start:
            steps.append(stop)
        return cls(tuple(steps))

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last(self) -> int:
        return self.steps[-1] if self.steps else 0


# ---------------------------------------------------------------------------------------------- masks & MRU


def _other_dims_mask(dim_masks: dict[int, torch.Tensor], shape: torch.Size, skip: int) -> torch.Tensor | None:
    """Product of the per-dimension masks except ``skip``, shaped to broadcast against ``shape``."""
    out = None
    for d, m in dim_masks.items():
        if d == skip or bool(m.all()):
            continue
        view = [1] * len(shape)
        view[d] = shape[d]
        mv = m.view(view)
        out = mv if out is None else out & mv
    return out


class MRUStore:
    """Per-dimension masks of every tensor that a prunable group lives in, and the most-recently-used
    (MRU) values of its elements.

    A tensor element is *live* when every dimension's position is kept (``conv.weight[i, j]`` is pruned
    when out channel ``i`` or in channel ``j`` is). ``snapshot`` copies the live elements into the store;
    the store thus holds, for every pruned element, its value when it was last active.
    """

    def __init__(self, model: nn.Module, graph: ChannelGraph):
        self.graph = graph
        self.dims: dict[tuple[str, str], dict[int, int]] = {}
        self.values: dict[tuple[str, str], torch.Tensor] = {}
        for grp in graph.groups:
            for m in grp.members:
                t = lookup_tensor(model, m.module, m.param)
                self.dims.setdefault((m.module, m.param), {})[m.dim] = t.shape[m.dim]
                if (m.module, m.param) not in self.values:
                    self.values[(m.module, m.param)] = t.detach().clone()

    def dim_masks(self, keep: dict[str, torch.Tensor]) -> dict[tuple[str, str], dict[int, torch.Tensor]]:
        """{(module, param): {dim: BoolTensor[size of dim]}}: which positions survive ``keep`` (on CPU)."""
        out = {k: {d: torch.ones(n, dtype=torch.bool) for d, n in dims.items()} for k, dims in self.dims.items()}
        for grp in self.graph.groups:
            mask = keep.get(grp.id)
            if mask is None or bool(mask.all()):
                continue
            for m in grp.members:
                out[(m.module, m.param)][m.dim][m.positions] &= mask[m.channels]
        return out

    @staticmethod
    def live(dim_masks: dict[int, torch.Tensor], shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Element-wise live mask of one tensor (broadcastable to ``shape``) from its dimension masks."""
        out = torch.ones([1] * len(shape), dtype=torch.bool)
        for d, m in dim_masks.items():
            view = [1] * len(shape)
            view[d] = shape[d]
            out = out & m.view(view)
        return out.to(device)

    @torch.no_grad()
    def snapshot(self, model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
        """Store the current values of every live element (call before the masks change)."""
        for key, dm in self.dim_masks(keep).items():
            t = lookup_tensor(model, *key)
            store = self.values[key]
            if store.device != t.device:
                store = self.values[key] = store.to(t.device)
            if all(bool(m.all()) for m in dm.values()):
                store.copy_(t.detach())
                continue
            live = self.live(dm, t.shape, t.device)
            store.copy_(torch.where(live, t.detach().to(store.dtype), store))

    @torch.no_grad()
    def restore(
        self, model: nn.Module, old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]
    ) -> dict[tuple[str, str], torch.Tensor]:
        """Write the MRU values of the elements live under ``new`` but not under ``old`` back into the model;
        returns those elements, {(module, param): bool mask of the tensor's shape}."""
        dm_old, dm_new = self.dim_masks(old), self.dim_masks(new)
        out = {}
        for key, dm in dm_new.items():
            if all(not bool((m & ~dm_old[key][d]).any()) for d, m in dm.items()):
                continue  # no position of this tensor came back
            t = lookup_tensor(model, *key)
            was = self.live(dm_old[key], t.shape, t.device)
            now = self.live(dm, t.shape, t.device)
            back = (now & ~was).expand(t.shape)
            if bool(back.any()):
                out[key] = back
                t.copy_(torch.where(back, self.values[key].to(t.device, t.dtype), t))
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{m}|{p}": v.detach().cpu().clone() for (m, p), v in self.values.items()}

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        for (m, p), v in self.values.items():
            key = f"{m}|{p}"
            if key not in sd:
                raise KeyError(f"MRU state has no values for {m}.{p}: was it saved with another model or graph?")
            if tuple(sd[key].shape) != tuple(v.shape):
                raise ValueError(f"MRU values of {m}.{p} have shape {tuple(sd[key].shape)}, expected {tuple(v.shape)}")
            v.copy_(sd[key])


# ---------------------------------------------------------------------------------------------- state


@dataclass
class PruningState:
    """What a strategy sees when the controller calls it.

    ``keep`` holds the masks *as of this call*: during ``prune`` the masks before the event, during
    ``regrow`` the masks right after this event's pruning. ``generator`` is the run's seeded generator:
    draw every random number from it so that the same seed gives the same masks (and DDP ranks agree).
    """

    model: nn.Module
    graph: ChannelGraph
    keep: dict[str, torch.Tensor]
    generator: torch.Generator
    mru: MRUStore
    step: int = 0
    steps_per_epoch: int = 1
    epochs: int = 1
    event_index: int = 0  # how many events ran before this one
    sparsity: float | None = None  # the event's global sparsity S (a MACs budget resolved), from prune_slack on
    extra: dict[str, Any] = field(default_factory=dict)  # scratch space for strategies (not saved)

    @property
    def epoch(self) -> float:
        """Training progress in epochs (fractional): ``step / steps_per_epoch``."""
        return self.step / max(1, self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def groups(self) -> list[ChannelGroup]:
        return self.graph.groups

    def mask(self, group: ChannelGroup | str) -> torch.Tensor:
        """The current keep mask of ``group`` (all True when it has none)."""
        gid = group if isinstance(group, str) else group.id
        m = self.keep.get(gid)
        return m if m is not None else torch.ones(self.graph[gid].size, dtype=torch.bool)

    # -- channel values ------------------------------------------------------------------------------

    def channel_matrix(
        self,
        group: ChannelGroup,
        roles: Sequence[str] = ("out", "dw"),
        params: Sequence[str] | None = ("weight",),
        source: str = "live",
    ) -> torch.Tensor:
        """The group's channels as rows of a float32 matrix ``[group.size, features]``.

        Features are the flattened values of the members with a role in ``roles`` (and a param name in
        ``params``; None = any), concatenated member after member: for ``roles=("out", "dw")`` a channel's
        row is its filter(s) -- the columns of the CHEX matrix W. ``source``:

        - ``"live"``: the model's current values (pruned channels are zero);
        - ``"mru"``: what each channel would be if it were restored now: live values for active channels,
          MRU values for pruned ones; elements pruned through *another* group (an input channel of the
          filter that is itself pruned) are zero either way.

        Groups with no member of those roles fall back to all members.
        """
        if source not in ("live", "mru"):
            raise ValueError(f"channel_matrix source must be 'live' or 'mru', got {source!r}")
        members = [m for m in group.members if m.role in roles and (params is None or m.param in params)]
        if not members:
            members = list(group.members)
        dm = self._dim_masks() if source == "mru" else None
        blocks = [self._member_rows(group, m, dm) for m in members]
        return torch.cat(blocks, dim=1) if blocks else torch.zeros(group.size, 0)

    def _dim_masks(self) -> dict[tuple[str, str], dict[int, torch.Tensor]]:
        # cached while ``keep`` and its tensors are the same objects (the controller replaces, never mutates)
        refs = list(self.keep.items())
        cached = self.extra.get("_dim_masks")
        if cached is None or len(cached[0]) != len(refs) or any(
            a[0] != b[0] or a[1] is not b[1] for a, b in zip(cached[0], refs)
        ):
            cached = (refs, self.mru.dim_masks(self.keep))
            self.extra["_dim_masks"] = cached
        return cached[1]

    def _member_tensor(self, m: Member, dm: dict[tuple[str, str], dict[int, torch.Tensor]] | None) -> torch.Tensor:
        """The tensor ``m`` lives in: as it is (``dm`` None), or with the positions of ``m``'s dimension that
        are pruned replaced by their MRU values and elements pruned through other dimensions zeroed."""
        t = lookup_tensor(self.model, m.module, m.param).detach()
        if dm is None:
            return t
        key = (m.module, m.param)
        own = dm[key][m.dim]
        view = [1] * t.dim()
        view[m.dim] = t.shape[m.dim]
        mru = self.mru.values[key]
        t = torch.where(own.view(view).to(t.device), t, mru.to(t.dtype))
        others = _other_dims_mask(dm[key], t.shape, m.dim)
        return t if others is None else t * others.to(t.device)

    def _member_rows(
        self, group: ChannelGroup, m: Member, dm: dict[tuple[str, str], dict[int, torch.Tensor]] | None
    ) -> torch.Tensor:
        t = self._member_tensor(m, dm)
        rows = t.movedim(m.dim, 0).index_select(0, m.positions.to(t.device)).reshape(len(m.positions), -1)
        rows = rows.float()
        counts = torch.bincount(m.channels, minlength=group.size)
        per = int(counts.max()) if len(counts) else 0
        if per == 1 and len(m.channels) == group.size:
            out = torch.empty_like(rows)
            out[m.channels.to(rows.device)] = rows
            return out
        if bool(((counts != 0) & (counts != per)).any()):
            raise ValueError(
                f"member {m.name} dim {m.dim} gives its channels unequal numbers of positions; "
                "channel_matrix cannot lay them out as rows"
            )
        order = torch.argsort(m.channels, stable=True)
        present = torch.nonzero(counts).flatten()
        out = rows.new_zeros(group.size, per * rows.shape[1])
        out[present.to(rows.device)] = rows[order.to(rows.device)].reshape(len(present), -1)
        return out

    def channel_norms(
        self,
        group: ChannelGroup,
        p: float = 1,
        roles: Sequence[str] = ("out", "dw"),
        params: Sequence[str] | None = ("weight",),
        source: str = "live",
    ) -> torch.Tensor:
        """Lp norm of each channel's values over the members of ``roles`` (float32, CPU): the norm of the
        concatenation of its values in those members (for p=1, the sum of the members' L1 norms)."""
        w = self.channel_matrix(group, roles=roles, params=params, source=source)
        return w.norm(p=p, dim=1).cpu()

    def bn_scales(self, group: ChannelGroup, source: str = "live", reduce: str = "mean") -> torch.Tensor | None:
        """|gamma| of the group's norm members' ``weight`` per channel, combined over the members by
        ``reduce`` (``"mean"`` or ``"max"``), as a CPU float32 tensor; None when the group has no affine norm
        layer. ``source``: ``"live"`` (pruned channels read 0) or ``"mru"`` (pruned channels read the
        |gamma| they had when last active), as in ``channel_matrix``."""
        if source not in ("live", "mru"):
            raise ValueError(f"bn_scales source must be 'live' or 'mru', got {source!r}")
        if reduce not in ("mean", "max"):
            raise ValueError(f"bn_scales reduce must be 'mean' or 'max', got {reduce!r}")
        norms = [m for m in group.members if m.role == "norm" and m.param == "weight"]
        if not norms:
            return None
        dm = self._dim_masks() if source == "mru" else None
        total = torch.zeros(group.size)
        count = torch.zeros(group.size)
        for m in norms:
            t = self._member_tensor(m, dm).float().abs().cpu()
            vals = t.movedim(m.dim, 0)[m.positions].reshape(len(m.positions), -1).mean(1)
            if reduce == "max":
                total.scatter_reduce_(0, m.channels, vals, "amax")
            else:
                total.index_add_(0, m.channels, vals)
            count.index_add_(0, m.channels, torch.ones_like(vals))
        return total if reduce == "max" else total / count.clamp_min(1)


# ---------------------------------------------------------------------------------------------- helpers


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the ``k`` largest ``scores`` (ties broken by the lower index)."""
    scores = scores.detach().float().cpu()
    order = torch.argsort(-scores, stable=True)
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[order[: max(0, int(k))]] = True
    return mask


def is_coupled(group: ChannelGroup) -> bool:
    """True for a group whose channels are produced by more than one layer, joined by an element-wise op
    (a residual stream: the stem or shortcut conv and every block's last conv; an SE gate and what it gates)."""
    return len(group.producers) > 1


def uniform_counts(graph: ChannelGraph, budget: Budget) -> dict[str, int]:
    """Every group keeps ``(1 - S) * size`` channels, rounded by ``budget``.

    The rounding offsets are dithered across groups (group i of L rounds with offset (i + 0.5) / L
    instead of 0.5): each group still keeps the floor or the ceiling of its share, but the groups change
    width one after another as S grows, so the total follows (1 - S) N closely and a MACs target can be
    met to within a channel instead of jumping whenever all groups of one size round together."""
    s = 0.0 if budget.sparsity is None else budget.sparsity
    n = max(1, len(graph.groups))
    return {
        g.id: budget.round_keep((1.0 - s) * g.size, g.size, offset=(i + 0.5) / n)
        for i, g in enumerate(graph.groups)
    }


def global_ranking_counts(
    graph: ChannelGraph,
    scores: dict[str, torch.Tensor],
    budget: Budget,
    groups: Sequence[ChannelGroup] | None = None,
) -> dict[str, int]:
    """Allocation from one global ranking of channel scores.

    With N prunable channels, the ``round(S * N)`` lowest scores are pruned (ties broken by group order,
    then channel index) and group l keeps ``size_l - pruned_l`` channels, rounded by ``budget`` and at
    least one. With distinct scores this is the percentile rule kappa_l = |{i : s_i^l <= q(S)}| / C_l.
    ``groups``: rank only these groups (N is their channel count) and return counts for them only.
    """
    s = 0.0 if budget.sparsity is None else budget.sparsity
    ids = [g.id for g in (graph.groups if groups is None else groups)]
    flat = torch.cat([scores[i].detach().float().cpu().flatten() for i in ids]) if ids else torch.zeros(0)
    owner = torch.cat([torch.full((graph[i].size,), n, dtype=torch.long) for n, i in enumerate(ids)]) if ids else \
        torch.zeros(0, dtype=torch.long)
    n_prune = int(round(s * len(flat)))
    pruned = torch.zeros(len(ids), dtype=torch.long)
    if n_prune:
        order = torch.argsort(flat, stable=True)[:n_prune]
        pruned = torch.bincount(owner[order], minlength=len(ids))
    return {i: budget.round_keep(graph[i].size - int(pruned[n]), graph[i].size) for n, i in enumerate(ids)}


# ---------------------------------------------------------------------------------------------- strategy


class Strategy(ABC):
    """Base class of pruning strategies (see the module docstring).

    Subclasses declare their parameters in ``params`` (name -> ``Param``) and a one-line ``description``
    (default: the first line of the class docstring). ``Strategy(**values)`` validates the values and sets
    each one as an attribute (``self.delta_0``). The controller calls, at each step of ``schedule``:

    1. ``allocate(state, budget)`` with the budget as a sparsity (MACs targets are resolved by bisection
       over that sparsity), further lowered by ``prune_slack(state)``;
    2. ``prune(state, group, keep)`` for every prunable group;
    3. when ``regrow_fraction(state) = d > 0``: ``allocate`` again at sparsity S - d, and
       ``regrow(state, group, count)`` for the difference. Regrown channels come back with their MRU
       values (``regrow_init = "mru"``) or with zero filters (``"zero"``), with zero optimizer state.
    """

    params: ClassVar[dict[str, Param]] = {}
    description: ClassVar[str] = ""
    name: ClassVar[str] = ""  # set by the registry
    # "mru": regrown channels get their most recently used values; "zero": their filters start at zero (their
    # norm parameters and the consumers' input columns still come back with MRU values, so they can learn)
    regrow_init: str = "mru"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("description"):
            doc = (cls.__doc__ or "").strip()
            cls.description = doc.splitlines()[0].strip() if doc else cls.__name__
        for pname, p in cls.params.items():
            if not isinstance(p, Param):
                raise TypeError(f"{cls.__name__}.params[{pname!r}] must be a prunekit.strategy.Param, got {p!r}")
            if callable(getattr(cls, pname, None)) or isinstance(getattr(cls, pname, None), property):
                raise TypeError(
                    f"{cls.__name__}.params[{pname!r}] would shadow the method {pname}(); rename the parameter"
                )
            p.validate(pname, p.default, cls.__name__)  # a bad default is the author's bug: fail at import

    def __init__(self, **params: Any) -> None:
        owner = f"strategy {self.name or type(self).__name__!r}"
        unknown = [k for k in params if k not in self.params]
        if unknown:
            valid = sorted(self.params)
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamError(
                f"{owner} has no parameter {unknown[0]!r}{hint} "
                f"(its parameters: {', '.join(valid) if valid else 'none'})"
            )
        self.hparams: dict[str, Any] = {}
        for pname, p in self.params.items():
            value = p.validate(pname, params.get(pname, p.default), owner)
            self.hparams[pname] = value
            setattr(self, pname, value)
        self.check()

    def check(self) -> None:
        """Cross-parameter validation (override; raise ParamError with a clear message)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        return {k: p.default for k, p in cls.params.items()}

    # -- the interface -------------------------------------------------------------------------------

    def schedule(self, steps_per_epoch: int, epochs: int) -> Schedule:
        """When events run (default: once, before training)."""
        return Schedule.once(0)

    def allocate(self, state: PruningState, budget: Budget) -> dict[str, int]:
        """{group id: channels to keep} at ``budget.sparsity`` (default: the same fraction in every group)."""
        return uniform_counts(state.graph, budget)

    @abstractmethod
    def prune(self, state: PruningState, group: ChannelGroup, keep: int) -> torch.Tensor:
        """A bool mask of ``group.size`` with exactly ``keep`` True entries: the channels that stay."""

    def regrow(self, state: PruningState, group: ChannelGroup, count: int) -> torch.Tensor:
        """Indices of at most ``count`` currently pruned channels of ``group`` to bring back (default none)."""
        return torch.zeros(0, dtype=torch.long)

    def prune_slack(self, state: PruningState) -> float:
        """How far below the target sparsity this event prunes (default 0; CHEX: delta_0 at the start)."""
        return 0.0

    def regrow_fraction(self, state: PruningState) -> float:
        """Global fraction of channels to regrow after pruning at this event (default 0: no regrow)."""
        return 0.0

    # -- checkpointing -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Strategy state that must survive a resume (default: none; parameters come from the config).
        Tensors and plain data only (numbers, strings, None, lists, dicts): checkpoints load with
        ``weights_only=True``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        return None


def describe_params(params: dict[str, Param]) -> list[str]:
    """One line per parameter: ``name = default  (type, range): help``."""
    return [f"{k} = {p.default!r}  ({p.describe()}){': ' + p.help if p.help else ''}" for k, p in params.items()]


def as_index(values: Iterable[int] | torch.Tensor) -> torch.Tensor:
    """A LongTensor of indices from a tensor, list or bool mask."""
    t = torch.as_tensor(values) if not isinstance(values, torch.Tensor) else values
    if t.dtype == torch.bool:
        t = torch.nonzero(t).flatten()
    return t.long().flatten().cpu()
