"""Datasets for the harness, all local (never a download):

- ``digits``: scikit-learn's embedded 8x8 handwritten digits (1797 images, 10 classes), 1x8x8 or resized;
  a fixed train/test split from ``data.split_seed``. The default: needs no files.
- ``fashion-mnist``: the IDX files (``train-images-idx3-ubyte[.gz]`` ...) from Debian's
  ``dataset-fashion-mnist`` package (/usr/share/datasets/fashion-mnist) or any folder (``data.root``).
- ``cifar10`` / ``cifar100``: torchvision's python-pickle format under ``data.root``.
- ``imagefolder``: ImageNet layout, ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``.
- ``synthetic``: random tensors with a learnable class signal (tests).

In-memory datasets (all but imagefolder) are ``ArrayData``: uint8/float tensors batched by index, with
augmentation (random crop with padding, horizontal flip) applied per batch from an explicit
``torch.Generator``; so an epoch is a pure function of (seed, epoch), and a run resumed mid-epoch sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")


class DataError(RuntimeError):
    """A dataset cannot be found or read; the message says where it looked and how to get it."""


@dataclass
class ArrayData:
    """An in-memory split: ``images`` [N, C, H, W] (uint8 0..255 or float), ``labels`` [N] long."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False  # random crop (padding ``pad``) + horizontal flip
    pad: int = 4
    flip: bool = True
    image_size: int | None = None  # resize batches to this side length

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized float images and labels of the samples ``idx``; augmented when ``augment`` and
        ``gen`` is given (the generator decides every random choice)."""
        x = self.images[idx]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.image_size is not None and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if self.augment and gen is not None:
            x = _augment(x, gen, self.pad, self.flip)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std, self.labels[idx]


def _draws(n: int, gen: torch.Generator, pad: int, flip: bool) -> tuple[torch.Tensor | None, ...]:
    """Every random choice of one augmented batch of ``n`` samples, in a fixed order."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen) if pad > 0 else None
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen) if pad > 0 else None
    f = torch.rand(n, generator=gen) < 0.5 if flip else None
    return dy, dx, f


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, per sample."""
    n, c, h, w = x.shape
    dy, dx, f = _draws(n, gen, pad, flip)
    if dy is not None and dx is not None:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
        x = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
        x = x.gather(3, cols)
    if f is not None:
        x = torch.where(f.view(n, 1, 1, 1), x.flip(3), x)
    return x


@dataclass
class DataBundle:
    """Train and test splits plus what the model needs to know about them."""

    name: str
    train: Any  # ArrayData or a torch Dataset (imagefolder)
    test: Any
    num_classes: int
    in_channels: int
    input_size: int
    classes: list[str] | None = None


class BatchStream:
    """The batches of one split for one epoch and one DDP rank.

    The order is a permutation seeded by (seed, epoch), sharded rank::world with the same number of
    samples per rank; ``start`` skips the first batches (resume mid-epoch). Augmentation draws from a
    generator seeded by (seed, epoch, rank) that is advanced past skipped batches, so a resumed epoch is
    identical to an uninterrupted one."""

    def __init__(
        self,
        split: Any,
        batch_size: int,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
    ):
        self.split, self.batch_size, self.train = split, batch_size, train
        self.seed, self.rank, self.world, self.workers = seed, rank, world, workers
        n = len(split)
        if train:
            self.per_rank = n // world
            if n == 0:
                raise DataError("the training set is empty; check data.root and data.limit_train")
            if self.per_rank == 0:
                raise DataError(
                    f"the training set has {n} samples, too few for {world} training processes (--nproc "
                    f"{world}): each needs at least one; use more samples (data.limit_train) or fewer processes"
                )
        else:
            self.per_rank = math.ceil((n - rank) / world) if n > rank else 0

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        n = len(self.split)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=g)
            return perm[self.rank : self.per_rank * self.world : self.world]
        return torch.arange(self.rank, n, self.world)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.indices(epoch)
        if isinstance(self.split, ArrayData):
            gen = torch.Generator().manual_seed((self.seed * 7919 + epoch) * 131 + self.rank) if self.train else None
            for b in range(len(self)):
                chunk = idx[b * self.batch_size : (b + 1) * self.batch_size]
                if b < start:
                    if gen is not None and self.split.augment:  # advance the generator as _augment would
                        _draws(len(chunk), gen, self.split.pad, self.split.flip)
                    continue
                yield self.split.batch(chunk, gen)
            return
        yield from self._loader_epoch(idx, epoch, start)

    def _loader_epoch(self, idx: torch.Tensor, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        g = torch.Generator().manual_seed(self.seed * 7919 + epoch * 131 + self.rank)
        loader = DataLoader(
            self.split,
            batch_size=self.batch_size,
            sampler=idx[start * self.batch_size :].tolist(),
            num_workers=self.workers,
            generator=g,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
        yield from loader


# ---------------------------------------------------------------------------------------- datasets


def build_data(cfg: Any) -> DataBundle:
    """The dataset named by ``cfg.name`` (a ``DataConfig``); a DataError when it cannot be loaded."""
    name = cfg.name.lower()
    loaders = {
        "digits": _digits,
        "fashion-mnist": _fashion_mnist,
        "fashion_mnist": _fashion_mnist,
        "cifar10": lambda c: _cifar(c, 10),
        "cifar100": lambda c: _cifar(c, 100),
        "imagefolder": _imagefolder,
        "synthetic": _synthetic,
    }
    if name not in loaders:
        import difflib

        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {cfg.name!r}{hint} (choices: {', '.join(DATASETS)})")
    bundle = loaders[name](cfg)
    for split, limit in ((bundle.train, cfg.limit_train), (bundle.test, cfg.limit_test)):
        if limit is not None and isinstance(split, ArrayData) and limit < len(split):
            split.images, split.labels = split.images[:limit], split.labels[:limit]
    for what, split in (("training", bundle.train), ("test", bundle.test)):
        if len(split) == 0:
            raise DataError(f"the {what} split of {cfg.name!r} is empty; check data.root and data.limit_*")
    return bundle


def _split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * fraction)))
    return perm[n_test:], perm[:n_test]


def _digits(cfg: Any) -> DataBundle:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(
            "the 'digits' dataset comes from scikit-learn, which is not installed: pip install scikit-learn "
            "(or `pip install prunekit[data]`)"
        ) from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8] in 0..1
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = _split(len(y), cfg.test_fraction, cfg.split_seed)
    size = cfg.image_size or 8
    mean, std = (float(x[tr].mean()),), (float(x[tr].std()),)
    common: dict[str, Any] = {"mean": mean, "std": std, "image_size": cfg.image_size, "pad": 1, "flip": False}
    train = ArrayData(x[tr], y[tr], augment=cfg.augment, **common)
    test = ArrayData(x[te], y[te], **common)
    return DataBundle("digits", train, test, 10, 1, size, [str(i) for i in range(10)])


FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: str) -> torch.Tensor:
    """An IDX file (optionally gzip-compressed) as a uint8 tensor of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(shape):
        raise DataError(f"{path}: header says {shape} ({math.prod(shape)} bytes) but holds {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*shape)


def find_idx(root: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(root, name)
        if os.path.exists(p):
            return p
    return None


def _fashion_mnist(cfg: Any) -> DataBundle:
    roots = [cfg.root] if cfg.root else [FASHION_MNIST_ROOT, os.path.join(FASHION_MNIST_ROOT, "raw")]
    found: dict[str, str] = {}
    for root in roots:
        paths = {k: find_idx(root, v) for k, v in FASHION_FILES.items()}
        if all(paths.values()):
            found = {k: v for k, v in paths.items() if v}
            break
    if not found:
        where = " or ".join(roots)
        raise DataError(
            f"Fashion-MNIST IDX files not found in {where} (looked for {', '.join(FASHION_FILES.values())}, "
            "raw or .gz). Install them with `sudo apt install dataset-fashion-mnist` (Debian/Ubuntu), or put "
            "the four files from https://github.com/zalandoresearch/fashion-mnist in a folder and pass "
            "`--set data.root=/that/folder`."
        )
    xs = {k: read_idx(v) for k, v in found.items()}
    common: dict[str, Any] = {
        "mean": (0.2860,),
        "std": (0.3530,),
        "image_size": cfg.image_size,
        "pad": 2,
        "flip": True,
    }
    train = ArrayData(xs["train_images"].unsqueeze(1), xs["train_labels"].long(), augment=cfg.augment, **common)
    test = ArrayData(xs["test_images"].unsqueeze(1), xs["test_labels"].long(), **common)
    return DataBundle("fashion-mnist", train, test, 10, 1, cfg.image_size or 28, FASHION_CLASSES)


def _cifar(cfg: Any, classes: int) -> DataBundle:
    from torchvision import datasets

    root = cfg.root or os.path.join("data", f"cifar{classes}")
    cls = datasets.CIFAR10 if classes == 10 else datasets.CIFAR100
    folder = cls.base_folder
    try:
        tr = cls(root, train=True, download=False)
        te = cls(root, train=False, download=False)
    except RuntimeError:  # torchvision's own message suggests download=True, which prunekit never does
        url = cls.url
        raise DataError(
            f"CIFAR-{classes} not found (or incomplete) under {os.path.abspath(root)}: expected the folder "
            f"{folder}/ of the python version. Download {url} on a machine with internet, unpack it "
            f"(tar xzf), and pass `--data-root /path/containing/{folder}` (or --set data.root=...)"
        ) from None
    mean = (0.4914, 0.4822, 0.4465) if classes == 10 else (0.5071, 0.4865, 0.4409)
    std = (0.2470, 0.2435, 0.2616) if classes == 10 else (0.2673, 0.2564, 0.2762)

    def arr(ds: Any, augment: bool) -> ArrayData:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # [N, 3, 32, 32] uint8
        y = torch.tensor(ds.targets, dtype=torch.long)
        return ArrayData(x, y, mean, std, augment=augment, pad=4, flip=True, image_size=cfg.image_size)

    return DataBundle(
        f"cifar{classes}",
        arr(tr, cfg.augment),
        arr(te, False),
        classes,
        3,
        cfg.image_size or 32,
        list(tr.classes),
    )


def _imagefolder(cfg: Any) -> DataBundle:
    from torchvision import datasets, transforms

    if not cfg.root:
        raise DataError("imagefolder needs `--set data.root=/path` holding train/<class>/... and val/<class>/...")
    size = cfg.image_size or 224
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = (
        [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
        if cfg.augment
        else [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
    )
    test_tf = [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
    splits = {}
    for split, names, tf in (
        ("train", ("train",), train_tf),
        ("test", ("val", "validation", "test"), test_tf),
    ):
        path = next((os.path.join(cfg.root, n) for n in names if os.path.isdir(os.path.join(cfg.root, n))), None)
        if path is None:
            raise DataError(
                f"imagefolder: no {'/'.join(names)} folder under {os.path.abspath(cfg.root)}; "
                "expected the ImageNet "
                "layout root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"
            )
        splits[split] = datasets.ImageFolder(path, transforms.Compose([*tf, transforms.ToTensor(), norm]))
    classes = splits["train"].classes
    return DataBundle("imagefolder", splits["train"], splits["test"], len(classes), 3, size, classes)


def _synthetic(cfg: Any) -> DataBundle:
    """Gaussian noise plus a fixed per-class pattern: learnable, deterministic from ``split_seed``."""
    size = cfg.image_size or 8
    g = torch.Generator().manual_seed(cfg.split_seed)
    n_test = max(cfg.num_classes, int(round(cfg.train_size * cfg.test_fraction)))
    n = cfg.train_size + n_test
    patterns = torch.randn(cfg.num_classes, cfg.channels, size, size, generator=g)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    x = patterns[y] + 1.0 * torch.randn(n, cfg.channels, size, size, generator=g)
    mean, std = (0.0,) * cfg.channels, (1.0,) * cfg.channels
    train = ArrayData(x[: cfg.train_size], y[: cfg.train_size], mean, std, augment=False)
    test = ArrayData(x[cfg.train_size :], y[cfg.train_size :], mean, std, augment=False)
    return DataBundle("synthetic", train, test, cfg.num_classes, cfg.channels, size)


def input_spec(bundle: DataBundle) -> dict[str, Any]:
    """How the model's inputs were made, to feed a trained (or exported) model the same way: the shape of
    one sample, how pixel values were scaled, the per-channel mean and std they were normalized with
    (``x = (scaled - mean) / std``) and the resizing of evaluation images. Plain data (result.json, plans)."""
    test = bundle.test
    size = bundle.input_size
    if isinstance(test, ArrayData):
        mean, std = list(test.mean), list(test.std)
        native = int(test.images.shape[-1])
        if bundle.name == "synthetic":
            scale = "none: the synthetic values are used as they are"
        elif test.images.dtype == torch.uint8:
            scale = "pixel values / 255, so 0..1"
        else:
            scale = "pixel values scaled to 0..1 (scikit-learn's digits: value / 16)"
        resize = None if size == native else f"bilinear resize from {native}x{native} to {size}x{size}"
    else:  # imagefolder: torchvision transforms ending in ToTensor() and Normalize(mean, std)
        norm = test.transform.transforms[-1]
        mean, std = [float(v) for v in norm.mean], [float(v) for v in norm.std]
        scale = "RGB pixel values / 255, so 0..1 (torchvision ToTensor)"
        resize = f"Resize({int(size * 256 / 224)}) (shorter side), then CenterCrop({size})"
    return {
        "dataset": bundle.name,
        "shape": [bundle.in_channels, size, size],  # one sample: channels, height, width (batches are NCHW)
        "in_channels": bundle.in_channels,
        "input_size": size,
        "channels": "RGB" if bundle.in_channels == 3 and bundle.name != "synthetic" else None,
        "scale": scale,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "resize": resize,
        "normalize": "x = (scaled - mean) / std, per channel",
    }


__all__ = ["DATASETS", "ArrayData", "BatchStream", "DataBundle", "DataError", "build_data", "input_spec", "read_idx"]
