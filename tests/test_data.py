"""Datasets: digits (embedded), synthetic, IDX reading, missing-data errors, deterministic batching."""

import gzip
import struct

import pytest
import torch

from prunekit.config import DataConfig
from prunekit.data import ArrayData, BatchStream, DataError, build_data, read_idx


def test_digits_default_split_is_fixed():
    a = build_data(DataConfig())
    b = build_data(DataConfig())
    assert (a.num_classes, a.in_channels, a.input_size) == (10, 1, 8)
    assert len(a.train) + len(a.test) == 1797
    assert torch.equal(a.test.labels, b.test.labels)
    other = build_data(DataConfig(split_seed=1))
    assert not torch.equal(a.test.labels, other.test.labels)
    x, y = a.train.batch(torch.arange(4))
    assert x.shape == (4, 1, 8, 8) and y.dtype == torch.long


def test_digits_upsampled():
    d = build_data(DataConfig(image_size=16))
    x, _ = d.test.batch(torch.arange(3))
    assert x.shape == (3, 1, 16, 16) and d.input_size == 16


def test_synthetic_shapes():
    d = build_data(DataConfig(name="synthetic", channels=3, num_classes=4, train_size=40, image_size=6))
    assert (d.num_classes, d.in_channels, d.input_size, len(d.train)) == (4, 3, 6, 40)


def test_unknown_dataset_suggests():
    with pytest.raises(DataError, match="did you mean 'digits'"):
        build_data(DataConfig(name="digit"))


def _write_idx(path, arr: torch.Tensor, gz: bool):
    head = struct.pack(">BBBB", 0, 0, 8, arr.dim()) + struct.pack(f">{arr.dim()}I", *arr.shape)
    data = head + arr.numpy().tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_any_folder(tmp_path, gz):
    g = torch.Generator().manual_seed(0)
    files = {
        "train-images-idx3-ubyte": torch.randint(0, 255, (20, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.randint(0, 10, (20,), generator=g, dtype=torch.uint8),
        "t10k-images-idx3-ubyte": torch.randint(0, 255, (5, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": torch.randint(0, 10, (5,), generator=g, dtype=torch.uint8),
    }
    for name, arr in files.items():
        _write_idx(tmp_path / (name + (".gz" if gz else "")), arr, gz)
    d = build_data(DataConfig(name="fashion-mnist", root=str(tmp_path)))
    assert (len(d.train), len(d.test), d.input_size, d.in_channels) == (20, 5, 28, 1)
    assert torch.equal(d.train.images[:, 0], files["train-images-idx3-ubyte"])
    x, y = d.train.batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(DataError, match="magic"):
        read_idx(str(p))


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        build_data(DataConfig(name="fashion-mnist", root=str(tmp_path / "empty")))
    msg = str(e.value)
    assert str(tmp_path / "empty") in msg and "apt install dataset-fashion-mnist" in msg and "data.root" in msg


def test_missing_cifar_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        build_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert str(tmp_path) in str(e.value) and "data.root" in str(e.value) and "cifar-10-batches-py" in str(e.value)


def test_missing_imagefolder(tmp_path):
    with pytest.raises(DataError, match="train"):
        build_data(DataConfig(name="imagefolder", root=str(tmp_path)))


def _stream(seed=3, rank=0, world=1):
    g = torch.Generator().manual_seed(0)
    split = ArrayData(
        torch.randint(0, 255, (50, 1, 8, 8), generator=g, dtype=torch.uint8),
        torch.randint(0, 3, (50,), generator=g),
        (0.5,),
        (0.25,),
        augment=True,
        pad=2,
        flip=True,
    )
    return BatchStream(split, 8, True, seed=seed, rank=rank, world=world)


def test_epoch_is_reproducible_and_resumable_mid_epoch():
    s = _stream()
    full = list(s.epoch(2))
    again = list(s.epoch(2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full, again, strict=True))
    resumed = list(s.epoch(2, start=3))  # skipped batches still advance the augmentation generator
    assert len(resumed) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(s.epoch(3))
    assert not torch.equal(other[0][0], full[0][0])


def test_ddp_shards_are_disjoint_and_equal_length():
    a, b = _stream(rank=0, world=2), _stream(rank=1, world=2)
    ia, ib = a.indices(1), b.indices(1)
    assert len(ia) == len(ib) == 25 and len(a) == len(b)
    assert not set(ia.tolist()) & set(ib.tolist())
