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


def build_graph(model: nn.Module, example_inputs: Any, leaf_modules: Iterable[type | str] = ()) -> ChannelGraph:
    """The channel dependency graph of ``model`` traced on ``example_inputs``.

    ``leaf_modules``: module classes or qualified names that fx should not trace into (their channels are
    frozen at their boundary). Raises GraphBuildError when fx cannot trace or the inputs do not fit.
    """
    model = unwrap(model)
    inputs = as_inputs(example_inputs)
    traced = trace(model, tuple(leaf_modules), inputs)
    values = record(traced, inputs)
    atoms = Atoms()
    prop = Propagator(traced, values, atoms)
    prop.run()
    terms = []
    for t in prop.macs_terms:
        w = getattr(prop.modules[t.module], t.param)
        term = (t.module, t.coef, t.rows or w.shape[0], w.shape[1])
        terms.append(term if t.param == "weight" else (*term, t.param))
    groups, frozen = _gather(atoms)
    sites = {(st.module, st.buffer): st for st in prop.stat_sites}
    stat_members: dict[tuple[str, str], list[tuple[str, Member]]] = {}
    for grp in groups + frozen:  # statistics sites are not tensors: they leave the member lists
        kept = []
        for m in grp.members:
            if m.role != "stat":
                kept.append(m)
            elif not grp.frozen:
                stat_members.setdefault((m.module, m.param), []).append((grp.id, m))
        grp.members = kept
    size_attrs = list(dict.fromkeys(prop.size_attrs))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if not isinstance(p, nn.UninitializedParameter)}
    return ChannelGraph(
        groups,
        frozen,
        type(model).__name__,
        terms,
        list(sites.values()),
        stat_members,
        traced.opaque,
        size_attrs,
        param_shapes=shapes,
        shape_branches=sorted(traced.guarded),
    )


def _gather(atoms: Atoms) -> tuple[list[ChannelGroup], list[ChannelGroup]]:
    # Vectorized over atoms (numpy), with no sort over all atoms (a stable sort of 10^5 atoms costs more
    # than everything else here). Blocks are contiguous, in allocation order, and cover every atom; a
    # class is named by its smallest atom (Atoms.roots).
    roots_t = atoms.roots()
    roots = roots_t.numpy()
    n = len(roots)
    blocks = atoms.blocks
    sizes = np.fromiter((b.size for b in blocks), dtype=np.int64, count=len(blocks))
    block_of = np.repeat(np.arange(len(blocks)), sizes)  # atom -> its block
    is_prod = np.fromiter((b.role in PRODUCER_ROLES for b in blocks), dtype=bool, count=len(blocks))

    # Each class is owned by the first producer space (conv/linear output, fresh space) that holds it, at
    # that space's first atom of the class; a class no producer holds (a parameter never coupled to a
    # tensor) by its first atom, so by the first block of any role that holds it.
    cls = np.flatnonzero(roots == np.arange(n))
    prod_atoms = np.flatnonzero(is_prod[block_of])
    first_prod = torch.full((n,), n, dtype=torch.int64)
    first_prod.scatter_reduce_(0, roots_t[prod_atoms], torch.from_numpy(prod_atoms), reduce="amin")
    owner_atom = first_prod.numpy()[cls]
    orphan = owner_atom == n
    owner_atom[orphan] = cls[orphan]
    owner = np.full(n, -1, dtype=np.int64)  # class -> its owning block
    owner[cls] = block_of[owner_atom]

    # producer spaces that share a class are one group (networkx components); orphan owners stand alone
    g = nx.Graph()
    g.add_nodes_from(np.flatnonzero(is_prod).tolist())
    g.add_nodes_from(np.unique(owner[cls[orphan]]).tolist())
    src, dst = block_of[prod_atoms], owner[roots[prod_atoms]]
    cross = src != dst
    keys = np.unique(src[cross] * len(blocks) + dst[cross])
    g.add_edges_from(zip((keys // len(blocks)).tolist(), (keys % len(blocks)).tolist()))
    components = sorted((sorted(c) for c in nx.connected_components(g)), key=lambda c: c[0])
    comp_of = np.full(len(blocks), -1, dtype=np.int64)
    for gi, comp in enumerate(components):
        comp_of[comp] = gi

    # a group's channels: its owned classes, in the order of their owning atoms
    is_owning = np.zeros(n, dtype=bool)
    is_owning[owner_atom] = True
    owning = np.flatnonzero(is_owning)
    gi_of = comp_of[block_of[owning]]
    order = _stable_order(gi_of, len(components))
    owning, gi_of = owning[order], gi_of[order]
    sizes_g = np.bincount(gi_of, minlength=len(components))
    starts = np.concatenate([[0], np.cumsum(sizes_g)[:-1]])
    gmap = np.full(n, -1, dtype=np.int64)  # root -> group index
    cmap = np.full(n, -1, dtype=np.int64)  # root -> channel index within its group
    gmap[roots[owning]] = gi_of
    cmap[roots[owning]] = np.arange(len(owning)) - starts[gi_of]

    reasons = _frozen_reasons(atoms, roots, gmap, cmap, len(components))
    metas = []
    used_ids: set[str] = set()
    for gi, comp in enumerate(components):
        first_block = blocks[comp[0]]
        gid = first_block.module if first_block.role == "out" and first_block.module else first_block.name
        base, k = gid, 2
        while gid in used_ids:
            gid, k = f"{base}#{k}", k + 1
        used_ids.add(gid)
        producers = []
        for bi in comp:
            if blocks[bi].role == "out":
                producers.append(blocks[bi].module)
            producers += [a[0] for a in atoms.aliases.get(bi, ()) if a[3] == "out"]
        metas.append((gid, int(sizes_g[gi]), producers, reasons[gi]))

    members = _members(atoms, sizes, gmap[roots], cmap[roots], len(components))
    emptiable = _emptiable(members, sizes_g)

    groups, frozen = [], []
    for gi, ((gid, size, producers, why), mem) in enumerate(zip(metas, members)):
        if size == 0:
            continue
        pieces = [(gid, size, producers, mem)]
        if gi in emptiable:
            if why:  # frozen anyway
                why.append(emptiable[gi])
            else:
                pieces = _refine(gid, size, mem, used_ids)
        for pid, psize, pprod, pmem in pieces:
            grp = ChannelGroup(pid, psize, pmem, pprod, list(why))
            if not grp.reasons and not pprod:
                grp.reasons.append("no layer produces these channels")
            (frozen if grp.reasons else groups).append(grp)
    return groups, frozen


def _refine(gid: str, size: int, members: list[Member], used_ids: set[str]) -> list[tuple]:
    """Split a group some of whose members hold only part of its channels (a split, a partial residual, a
    grouped conv over a concat) into parts such that every member holds whole parts: the channels held by
    exactly the same members form one part. "Keep at least one channel of every group" then keeps at least
    one channel of every layer, where the whole group could lose all channels of one layer."""
    distinct = list({id(m.channels): m.channels for m in members}.values())  # aliases share their tensors
    cover = np.zeros((len(distinct), size), dtype=bool)
    for i, ch in enumerate(distinct):
        cover[i, ch.numpy()] = True
    _, cell = np.unique(cover.T, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    firsts = {}
    for c, k in enumerate(cell.tolist()):
        firsts.setdefault(k, c)
    order = sorted(firsts, key=firsts.get)  # parts in the order of their first channel
    part_of = np.empty(size, dtype=np.int64)
    index = np.empty(size, dtype=np.int64)
    for p, k in enumerate(order):
        chans = np.flatnonzero(cell == k)
        part_of[chans] = p
        index[chans] = np.arange(len(chans))
    part_t, index_t = torch.from_numpy(part_of), torch.from_numpy(index)
    pieces = []
    for p in range(len(order)):
        mem = []
        for m in members:
            sel = part_t[m.channels] == p
            if bool(sel.any()):
                mem.append(Member(m.module, m.param, m.dim, m.positions[sel], index_t[m.channels[sel]], m.role))
        pid = gid if p == 0 else f"{gid}#part{p}"
        k = 2
        while p and pid in used_ids:
            pid, k = f"{gid}#part{p}.{k}", k + 1
        used_ids.add(pid)
        producers = list(dict.fromkeys(m.module for m in mem if m.role == "out"))
        pieces.append((pid, int((part_of == p).sum()), producers, mem))
    return pieces


def _members(
    atoms: Atoms, sizes: np.ndarray, atom_g: np.ndarray, atom_c: np.ndarray, n_groups: int
) -> list[list[Member]]:
    """Each group's members, in block order: one per (block, group) and one more per alias of the block.
    ``sizes``: every block's size; ``atom_g``/``atom_c``: the group and the channel of every atom."""
    blocks = atoms.blocks
    members: list[list[Member]] = [[] for _ in range(n_groups)]
    nonempty = sizes > 0
    starts_b = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lo = np.full(len(blocks), -1, dtype=np.int64)
    hi = np.full(len(blocks), -1, dtype=np.int64)
    lo[nonempty] = np.minimum.reduceat(atom_g, starts_b[nonempty])
    hi[nonempty] = np.maximum.reduceat(atom_g, starts_b[nonempty])
    fresh = np.fromiter((b.role == "fresh" for b in blocks), dtype=bool, count=len(blocks))
    split = _split_members(blocks, (lo != hi) & ~fresh, atom_g, atom_c)
    ch_all = torch.from_numpy(atom_c)
    aranges: dict[int, torch.Tensor] = {}  # members share them: nothing writes to a member's indices
    for bi, b in enumerate(blocks):
        if b.role == "fresh" or not b.size:
            continue
        if lo[bi] == hi[bi]:  # the usual case: the whole dimension is in one group
            pos = aranges.get(b.size)
            if pos is None:
                pos = aranges[b.size] = torch.arange(b.size)
            ch = ch_all[b.start : b.start + b.size]
            members[lo[bi]].append(Member(b.module, b.param, b.dim, pos, ch, b.role))
            for module, param, dim, role in atoms.aliases.get(bi, ()):
                members[lo[bi]].append(Member(module, param, dim, pos, ch, role))
        else:
            for k, mem in split[bi]:
                members[k].append(mem)
                for module, param, dim, role in atoms.aliases.get(bi, ()):
                    members[k].append(Member(module, param, dim, mem.positions, mem.channels, role))
    return members


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """A stable argsort of small non-negative integer keys (< bound): radix sort when they fit 16 bits."""
    if bound < 2**15:
        return np.argsort(keys.astype(np.int16), kind="stable")
    return np.argsort(keys, kind="stable")


def _split_members(
    blocks: list, which: np.ndarray, atom_g: np.ndarray, atom_c: np.ndarray
) -> dict[int, list[tuple[int, Member]]]:
    """Members of the blocks (``which``) whose positions lie in several groups (a conv reading a concat of
    several producers): {block: [(group, member), ...] by group}. densenet121 has ~3000 such members, so
    the per-member cost is what counts: positions come in runs of one group (torch.split makes all of a
    block's pieces in one call), and consecutive blocks with the same layout (a norm layer and the conv
    reading it) share their index tensors."""
    out: dict[int, list[tuple[int, Member]]] = {}
    ch_t = torch.from_numpy(atom_c)
    prev: tuple[np.ndarray, np.ndarray, list[tuple[int, torch.Tensor, torch.Tensor]]] | None = None
    for bi in np.flatnonzero(which).tolist():
        b = blocks[bi]
        grp, ch = atom_g[b.start : b.start + b.size], atom_c[b.start : b.start + b.size]
        if prev is not None and np.array_equal(grp, prev[0]) and np.array_equal(ch, prev[1]):
            pieces = prev[2]
        else:
            starts = [0, *(np.flatnonzero(grp[1:] != grp[:-1]) + 1).tolist()]
            lengths = np.diff([*starts, b.size]).tolist()
            pos_parts = torch.arange(b.size).split(lengths)
            ch_parts = ch_t[b.start : b.start + b.size].split(lengths)
            runs: dict[int, list[int]] = {}
            for i, k in enumerate(grp[starts].tolist()):
                runs.setdefault(k, []).append(i)
            pieces = []
            for k in sorted(runs):
                idx = runs[k]
                if len(idx) == 1:
                    pieces.append((k, pos_parts[idx[0]], ch_parts[idx[0]]))
                else:
                    pieces.append((k, torch.cat([pos_parts[i] for i in idx]), torch.cat([ch_parts[i] for i in idx])))
            prev = (grp, ch, pieces)
        out[bi] = [(k, Member(b.module, b.param, b.dim, pos, c, b.role)) for k, pos, c in pieces]
    return out


def _emptiable(members: list[list[Member]], sizes_g: np.ndarray) -> dict[int, str]:
    """Groups with a member that holds only some of the group's channels: a mask keeping only the others
    would leave that layer no channel at all, which slimming cannot express, so the group is frozen. It
    happens when channels of several layers are pruned together as units: a grouped conv or a channel
    shuffle over a concat whose parts are its groups, or ``chunk`` over a dense concat (channel i of one
    half pruned with channel i of the other). One vectorized pass: each member marks the channels it
    holds in a row of its group's size."""
    rows, chans, sizes = [], [], []
    seen_ids: set[int] = set()
    for gi, mem in enumerate(members):
        for m in mem:
            if id(m.channels) in seen_ids or not sizes_g[gi]:  # aliases share their primary's tensors
                continue
            seen_ids.add(id(m.channels))
            rows.append((gi, m))
            chans.append(m.channels)
            sizes.append(int(sizes_g[gi]))
    if not rows:
        return {}
    size = np.array(sizes)
    lengths = np.array([len(c) for c in chans])
    offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
    seen = np.zeros(int(size.sum()), dtype=bool)
    seen[np.repeat(offsets, lengths) + torch.cat(chans).numpy()] = True
    covered = np.add.reduceat(seen, offsets) if len(seen) else np.zeros(len(rows), dtype=np.int64)
    out: dict[int, str] = {}
    for k in np.flatnonzero((covered < size) & (size > 0)).tolist():
        gi, m = rows[k]
        out.setdefault(
            gi,
            f"channels are pruned in units that could remove every channel of {m.name} dim {m.dim} "
            f"(it holds {int(covered[k])} of the group's {size[k]})",
        )
    return out


def _frozen_reasons(
    atoms: Atoms, roots: np.ndarray, gmap: np.ndarray, cmap: np.ndarray, n_groups: int
) -> list[list[str]]:
    """Each group's reasons to be frozen: at most MAX_REASONS distinct ones, those of its lowest frozen
    channels first (in the order the rules gave them)."""
    out: list[list[str]] = [[] for _ in range(n_groups)]
    if not atoms.frozen:
        return out
    at = np.concatenate([a.numpy() for a, _ in atoms.frozen])
    entry = np.repeat(np.arange(len(atoms.frozen)), [len(a) for a, _ in atoms.frozen])
    r = roots[at]
    # the lowest channel of each (group, entry) pair
    pair, inv = np.unique(gmap[r] * len(atoms.frozen) + entry, return_inverse=True)
    low = np.full(len(pair), np.iinfo(np.int64).max)
    np.minimum.at(low, inv, cmap[r])
    g, e = pair // len(atoms.frozen), pair % len(atoms.frozen)
    for k in np.lexsort((e, low, g)).tolist():
        lst = out[int(g[k])]
        why = atoms.frozen[int(e[k])][1]
        if why not in lst and len(lst) < MAX_REASONS:
            lst.append(why)
    return out
