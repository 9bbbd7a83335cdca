"""The shipped configs: every file in configs/ loads, and the CIFAR-10 ResNet-56 CHEX recipe (meant for a GPU)
runs unchanged from a local CIFAR-10 folder, here on the CPU with a tiny stand-in of the dataset."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

import prunekit as pk
from prunekit.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_names_a_registered_strategy(path):
    cfg = load_config(str(path))
    if cfg.prune.strategy != "none":
        pk.get_strategy(cfg.prune.strategy, **cfg.prune.params)  # parameters validated


def _fake_cifar10(root: Path, n: int = 16) -> None:
    """torchvision's python layout (cifar-10-batches-py/) with ``n`` random images per file."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(d / name, "wb") as f:
            pickle.dump(blob, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def test_cifar10_resnet56_recipe_runs_unchanged_from_a_local_folder(tmp_path, monkeypatch):
    from torchvision.datasets import cifar

    _fake_cifar10(tmp_path / "cifar")
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # the stand-in files have other MD5s
    path = ROOT / "configs" / "cifar10_resnet56_chex.yaml"
    recipe = yaml.safe_load(path.read_text())
    # only the data location, the length and the output change; the recipe itself is used as written
    cfg = load_config(
        str(path),
        sets=[f"data.root={tmp_path / 'cifar'}", "train.epochs=2", f"run.out={tmp_path}", "run.name=r56",
              "run.progress=off", "run.latency_runs=1", "train.threads=1"],
    )  # fmt: skip
    assert cfg.prune.params == recipe["prune"]["params"] and cfg.train.lr == recipe["train"]["lr"]
    res = pk.run(cfg)
    assert res.status == "ok" and res.model == "resnet56" and res.dataset == "cifar10"
    assert res.num_events >= 2  # the start and at least T_max
    assert abs(res.macs / res.dense_macs - recipe["prune"]["macs"]) <= 0.01 * recipe["prune"]["macs"] + 1e-9
    assert os.path.exists(os.path.join(res.run_dir, "model_pruned.pt"))
