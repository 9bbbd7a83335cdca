"""Channel atoms and their coupling.

Every channel position that matters gets an integer *atom*: the positions of a parameter dimension
(``conv.weight`` dim 0), and fresh channel spaces (the model input, tensors of unknown origin). Rules
*union* atoms that must be pruned together; after the pass, each union-find class is one channel of one
group. A tensor's channel annotation ``Ann(dim, atoms)`` says which atom lives at each position of its
channel dimension (several positions may share an atom: flatten gives each channel H*W features).
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
        return len(self.atoms)


@dataclass(frozen=True)
class ParamRef:
    """A tensor value that is a parameter or buffer read directly (an fx ``get_attr`` node)."""

    module: str
    param: str
    shape: tuple[int, ...]


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

    @property
    def atoms(self) -> torch.Tensor:
        return torch.arange(self.start, self.start + self.size)


class Atoms:
    """Allocation, union-find and freezing of channel atoms."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.blocks: list[Block] = []
        self._param_blocks: dict[tuple[str, str, int], Block] = {}
        self.frozen: list[tuple[torch.Tensor, str]] = []

    def _alloc(self, n: int, module, param, dim, role: str, name: str) -> Block:
        b = Block(len(self.parent), n, module, param, dim, role, name)
        self.parent.extend(range(b.start, b.start + n))
        self.blocks.append(b)
        return b

    def fresh(self, n: int, name: str, frozen: str | None = None) -> torch.Tensor:
        """A new channel space of ``n`` atoms, frozen with ``frozen`` as the reason when given."""
        atoms = self._alloc(n, None, None, None, "fresh", name).atoms
        if frozen:
            self.freeze(atoms, frozen)
        return atoms

    def param(self, module: str, param: str, dim: int, size: int, role: str) -> torch.Tensor:
        """The atoms of ``module.param`` along ``dim`` (the same atoms every time it is asked for, so a
        module used twice couples both uses)."""
        key = (module, param, dim)
        b = self._param_blocks.get(key)
        if b is None:
            name = f"{module}.{param}" if module else param
            b = self._param_blocks[key] = self._alloc(size, module, param, dim, role, name)
        elif b.size != size:
            raise AssertionError(f"{b.name} dim {dim} seen with sizes {b.size} and {size}")
        return b.atoms

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Couple ``a[i]`` with ``b[i]`` for every i."""
        if len(a) != len(b):
            raise AssertionError(f"coupling channel spaces of sizes {len(a)} and {len(b)}")
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                # keep the older atom as root so producers stay canonical
                if rx < ry:
                    self.parent[ry] = rx
                else:
                    self.parent[rx] = ry

    def freeze(self, atoms: torch.Tensor, reason: str) -> None:
        if len(atoms):
            self.frozen.append((atoms, reason))

    def roots(self) -> torch.Tensor:
        """The class root of every atom."""
        return torch.tensor([self.find(a) for a in range(len(self.parent))], dtype=torch.long)
