"""BatchNorm statistics after a pruning event: the harness re-estimates them from training batches before
it evaluates an epoch in which an event changed the masks, and leaves them alone otherwise."""

import csv
import os

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.config import ConfigError, load_config
from prunekit.data import ArrayData, BatchStream
from prunekit.harness import Env, recalibrate_bn


def _stream(n=96, batch=16):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 2, 6, 6, generator=g) * 3 + 1.5
    labels = torch.randint(0, 3, (n,), generator=g)
    return BatchStream(ArrayData(images, labels, mean=(0.0, 0.0), std=(1.0, 1.0)), batch, train=True, seed=1)


def test_recalibrate_bn_estimates_the_statistics_of_the_training_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3))
    model.eval()
    bn = model[1]
    bn.running_mean.fill_(100.0)  # stale statistics, as after an event
    bn.running_var.fill_(1e-3)
    stream = _stream()
    used = recalibrate_bn(model, stream, epoch=2, batches=4, env=Env(torch.device("cpu")))
    assert used == 4
    with torch.no_grad():  # the reference: a plain average of the 4 batches' own statistics
        acts = [model[0](x) for x, _ in list(stream.epoch(2))[:4]]
    mean = torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0)
    var = torch.stack([a.var((0, 2, 3), unbiased=True) for a in acts]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.1 and not model.training  # settings and mode restored
    before = bn.running_mean.clone()
    assert recalibrate_bn(model, stream, 2, 0, Env(torch.device("cpu"))) == 0  # 0: off
    assert torch.equal(bn.running_mean, before)
    assert recalibrate_bn(nn.Linear(3, 3), stream, 2, 4, Env(torch.device("cpu"))) == 0  # no BN layer


def _run(tmp_path, strategy, *sets):
    cfg = load_config(
        flags={
            "prune.strategy": strategy, "data.name": "digits", "model.name": "small_cnn", "train.epochs": 3,
            "train.batch_size": 64, "train.threads": 1, "run.out": str(tmp_path), "run.name": strategy,
            "run.progress": "off", "run.latency_runs": 1, "prune.sparsity": 0.5,
        },
        sets=list(sets),
    )  # fmt: skip
    return pk.run(cfg)


def _recalibrated(res):
    with open(os.path.join(res.run_dir, "metrics.csv")) as f:
        return [int(r["bn_recalibrated"]) for r in csv.DictReader(f)]


def test_the_harness_recalibrates_after_an_epoch_with_an_event(tmp_path):
    # chex with events at the end of epochs 1 and 2 (delta_T = 1, T_max = 2): those evaluations see
    # re-estimated statistics; epoch 3 (no event) and every dense epoch keep the running averages
    res = _run(tmp_path, "chex", "prune.params.delta_T=1", "prune.params.T_max=2", "train.bn_recalibration=3")
    assert _recalibrated(res) == [3, 3, 0]
    assert _recalibrated(_run(tmp_path, "none")) == [0, 0, 0]
    off = _run(tmp_path, "magnitude", "prune.params.prune_step=5", "train.bn_recalibration=0")
    assert _recalibrated(off) == [0, 0, 0]


def test_negative_recalibration_is_an_error():
    with pytest.raises(ConfigError, match="bn_recalibration"):
        load_config(sets=["train.bn_recalibration=-1"])
