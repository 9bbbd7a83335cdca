"""Channel atoms and their coupling.

Every channel position that matters gets an integer *atom*: the positions of a parameter dimension
(``conv.weight`` dim 0), and fresh channel spaces (the model input, tensors of unknown origin). Rules
*union* atoms that must be pruned together (an edge each); after the pass, each connected class of atoms
is one channel of one group. A tensor's channel annotation ``Ann(dim, atoms)`` says which atom lives at each
position of its channel dimension (several positions may share an atom: flatten gives each channel H*W features).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ann:
    """The channel dimension of a tensor value: ``atoms[p]`` is the atom at position ``p`` of ``dim``."""

    dim: int
    atoms: torch.Tensor  # LongTensor [size of dim]
    # while a channel space is spread over several dims (mid channel-shuffle: view -> transpose -> view):
    # (those dims, a grid of indices into ``atoms`` shaped like them); ``dim`` is then -1
    spread: tuple[tuple[int, ...], torch.Tensor] | None = None

    @property
    def size(self) -> int:
        return self.atoms.shape[0]


@dataclass(frozen=True)
class ParamRef:
    """A tensor value computed from parameters or buffers alone (an fx ``get_attr`` node, a view of one, or
    element-wise arithmetic on them: a layer scale reshaped to [1, C, 1, 1], FrozenBatchNorm's
    ``weight * (running_var + eps).rsqrt()``). ``sources``: (module, param, param dim, value dim) for each
    parameter dimension of size > 1 and the dimension of this value that holds it, position for position.
    ``lost``: some parameter dimension could not be followed to a dimension of this value."""

    shape: tuple[int, ...]
    sources: tuple[tuple[str, str, int, int], ...]
    lost: bool = False

    def at(self, dim: int) -> list[tuple[str, str, int]]:
        """The parameter dimensions held, position for position, by ``dim`` of this value."""
        return [(m, p, pd) for m, p, pd, vd in self.sources if vd == dim]


@dataclass(frozen=True)
class Block:
    """A contiguous range of atoms: a parameter dimension or a fresh channel space."""

    start: int
    size: int
    module: str | None  # None for a fresh space
    param: str | None
    dim: int | None
    role: str  # "out", "in", "norm", "dw", "param", or "fresh"
    name: str  # readable name ("layer1.0.conv1.weight" / "input x")


class Atoms:
    """Allocation, coupling and freezing of channel atoms. Couplings are recorded as edges and resolved
    once, vectorized, when the pass is over (``roots``)."""

    def __init__(self) -> None:
        self.count = 0
        self.blocks: list[Block] = []
        self._param_blocks: dict[tuple[str, str, int], tuple[int, torch.Tensor]] = {}  # -> (block index, atoms)
        # block index -> the other (module, param, dim, role) that hold its atoms position for position
        self.aliases: dict[int, list[tuple[str, str, int, str]]] = {}
        self._edges: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.frozen: list[tuple[torch.Tensor, str]] = []
        self._ids = torch.arange(1 << 14)  # blocks' atoms are views into it (nothing writes to atoms)

    def _alloc(self, n: int, module, param, dim, role: str, name: str) -> Block:
        b = Block(self.count, n, module, param, dim, role, name)
        self.count += n
        self.blocks.append(b)
        return b

    def _span(self, b: Block) -> torch.Tensor:
        """The atoms of ``b``: a slice of one shared range, ~10x cheaper than an arange per block."""
        if self.count > len(self._ids):
            self._ids = torch.arange(max(self.count, 2 * len(self._ids)))
        return self._ids[b.start : b.start + b.size]

    def fresh(self, n: int, name: str, frozen: str | None = None) -> torch.Tensor:
        """A new channel space of ``n`` atoms, frozen with ``frozen`` as the reason when given."""
        atoms = self._span(self._alloc(n, None, None, None, "fresh", name))
        if frozen:
            self.freeze(atoms, frozen)
        return atoms

    def param(self, module: str, param: str, dim: int, size: int, role: str) -> torch.Tensor:
        """The atoms of ``module.param`` along ``dim`` (the same atoms every time it is asked for, so a
        module used twice couples both uses)."""
        key = (module, param, dim)
        found = self._param_blocks.get(key)
        if found is None:
            name = f"{module}.{param}" if module else param
            b = self._alloc(size, module, param, dim, role, name)
            found = self._param_blocks[key] = (len(self.blocks) - 1, self._span(b))
        elif len(found[1]) != size:
            raise AssertionError(f"{module}.{param} dim {dim} seen with sizes {len(found[1])} and {size}")
        return found[1]

    def alias(self, module: str, param: str, dim: int, role: str, of: tuple[str, str, int]) -> None:
        """``module.param`` along ``dim`` holds the channels of the parameter dimension ``of`` (asked for with
        ``param`` before), position for position: a norm layer's bias and running statistics beside its
        weight, a conv's bias beside its filters. They share its atoms instead of taking their own and a
        coupling each, which halves the atoms of a typical CNN."""
        primary = self._param_blocks[of]
        key = (module, param, dim)
        found = self._param_blocks.get(key)
        if found is None:
            self._param_blocks[key] = primary
            self.aliases.setdefault(primary[0], []).append((module, param, dim, role))
        elif found[0] != primary[0]:  # it has atoms of its own already: couple them
            self.union(found[1], primary[1])

    def union(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Couple ``a[i]`` with ``b[i]`` for every i."""
        if a.shape[0] != b.shape[0]:
            raise AssertionError(f"coupling channel spaces of sizes {a.shape[0]} and {b.shape[0]}")
        self._edges.append((a if a.dim() == 1 else a.reshape(-1), b if b.dim() == 1 else b.reshape(-1)))

    def freeze(self, atoms: torch.Tensor, reason: str) -> None:
        if len(atoms):
            self.frozen.append((atoms, reason))

    def roots(self) -> torch.Tensor:
        """The class of every atom, named by its smallest atom (min-label propagation with pointer
        jumping over the coupling edges)."""
        labels = torch.arange(self.count)
        if not self._edges:
            return labels
        a = torch.cat([e[0] for e in self._edges])
        b = torch.cat([e[1] for e in self._edges])
        while True:
            m = torch.minimum(labels.index_select(0, a), labels.index_select(0, b))  # 8x faster than labels[a]
            new = labels.clone()
            new.scatter_reduce_(0, a, m, reduce="amin")
            new.scatter_reduce_(0, b, m, reduce="amin")
            while True:  # jump to the label's label until stable
                jumped = new.index_select(0, new)
                if torch.equal(jumped, new):
                    break
                new = jumped
            if torch.equal(new, labels):
                return labels
            labels = new
