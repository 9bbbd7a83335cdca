"""``build_graph``: trace a model, propagate channel atoms through the coupling rules, and gather the
coupled channels into ChannelGroups (connected components of producer spaces, held in networkx)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import nn

from .atoms import Atoms
from .graph import ChannelGraph, ChannelGroup, Member
from .rules import Propagator
from .trace import record, trace, unwrap

PRODUCER_ROLES = ("out", "fresh")
MAX_REASONS = 5


def as_inputs(example_inputs: Any) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple of positional arguments; a clear error for anything else."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a non-empty tuple of the model's positional inputs, "
        f"got {type(example_inputs).__name__}; for an image model pass e.g. torch.randn(1, 3, 224, 224)"
    )


def build_graph(
    model: nn.Module, example_inputs: Any, leaf_modules: Iterable[type | str] = ()
) -> ChannelGraph:
    """The channel dependency graph of ``model`` traced on ``example_inputs``.

    ``leaf_modules``: module classes or qualified names that fx should not trace into (their channels are
    frozen at their boundary). Raises GraphBuildError when fx cannot trace or the inputs do not fit.
    """
    model = unwrap(model)
    inputs = as_inputs(example_inputs)
    traced = trace(model, tuple(leaf_modules))
    values = record(traced, inputs)
    atoms = Atoms()
    prop = Propagator(traced, values, atoms)
    prop.run()
    terms = []
    for t in prop.macs_terms:
        w = prop.modules[t.module].weight
        terms.append((t.module, t.coef, w.shape[0], w.shape[1]))
    groups, frozen = _gather(atoms)
    return ChannelGraph(groups, frozen, type(model).__name__, terms)


def _gather(atoms: Atoms) -> tuple[list[ChannelGroup], list[ChannelGroup]]:
    # numpy, not torch: thousands of tiny index operations, where torch's per-call overhead dominated
    roots = atoms.roots().numpy()
    n = len(roots)
    blocks = atoms.blocks
    # each class is owned by the first producer space (conv/linear output, fresh space) that holds it;
    # classes no producer holds (a parameter never coupled to a tensor) are owned by their own block
    owner = np.full(n, -1, dtype=np.int64)
    g = nx.Graph()
    for pass_roles in (PRODUCER_ROLES, None):
        for bi, b in enumerate(blocks):
            if (pass_roles is not None) != (b.role in PRODUCER_ROLES):
                continue
            r = roots[b.start : b.start + b.size]
            mine = owner[r] == -1
            if pass_roles is None and not mine.any():
                continue
            owner[r[mine]] = bi
            g.add_node(bi)
            if pass_roles is not None:
                for other in np.unique(owner[r]).tolist():
                    if other != bi:
                        g.add_edge(bi, other)
    components = sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: c[0])

    frozen_why: dict[int, list[str]] = {}
    for at, reason in atoms.frozen:
        for r in np.unique(roots[at.numpy()]).tolist():
            lst = frozen_why.setdefault(r, [])
            if reason not in lst and len(lst) < MAX_REASONS:
                lst.append(reason)

    gmap = np.full(n, -1, dtype=np.int64)  # root -> group index
    cmap = np.full(n, -1, dtype=np.int64)  # root -> channel index within its group
    frozen_roots = set(frozen_why)
    metas = []
    used_ids: set[str] = set()
    for gi, comp in enumerate(components):
        size = 0
        reasons: list[str] = []
        for bi in comp:
            b = blocks[bi]
            r = roots[b.start : b.start + b.size]
            r = r[(owner[r] == bi) & (gmap[r] == -1)]
            if not len(r):
                continue
            _, first = np.unique(r, return_index=True)
            ordered = r[np.sort(first)]  # channels in the order the producer holds them
            gmap[ordered] = gi
            cmap[ordered] = np.arange(size, size + len(ordered))
            size += len(ordered)
            if frozen_roots:
                for root in frozen_roots.intersection(ordered.tolist()):
                    for why in frozen_why[root]:
                        if why not in reasons and len(reasons) < MAX_REASONS:
                            reasons.append(why)
        first_block = blocks[comp[0]]
        gid = first_block.module if first_block.role == "out" and first_block.module else first_block.name
        base, k = gid, 2
        while gid in used_ids:
            gid, k = f"{base}#{k}", k + 1
        used_ids.add(gid)
        producers = [blocks[bi].module for bi in comp if blocks[bi].role == "out"]
        metas.append((gid, size, producers, reasons))

    members: list[list[Member]] = [[] for _ in components]
    for b in blocks:
        if b.role == "fresh":
            continue
        r = roots[b.start : b.start + b.size]
        gi, ch = gmap[r], cmap[r]
        first = gi[0]
        if (gi == first).all():  # the usual case: the whole dimension is in one group
            pos = np.arange(len(gi))
            members[first].append(
                Member(b.module, b.param, b.dim, torch.from_numpy(pos), torch.from_numpy(ch), b.role)
            )
            continue
        for k in np.unique(gi).tolist():
            pos = np.flatnonzero(gi == k)
            members[k].append(
                Member(b.module, b.param, b.dim, torch.from_numpy(pos), torch.from_numpy(ch[pos]), b.role)
            )

    groups, frozen = [], []
    for (gid, size, producers, reasons), mem in zip(metas, members):
        if size == 0:
            continue
        grp = ChannelGroup(gid, size, mem, producers, reasons)
        if not reasons and not producers:
            grp.reasons.append("no layer produces these channels")
        (frozen if grp.reasons else groups).append(grp)
    return groups, frozen
