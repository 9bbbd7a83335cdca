"""``train.channels_last`` and ``train.compile`` in the harness: masks stay exact (pruned weights, gradients and
optimizer state exactly zero; the slimmed model computes what the masked one does), pruning events run, and a
compiled run interrupted at an epoch boundary and resumed ends exactly like an uninterrupted compiled run."""

import csv

import pytest
import torch
from prunekit.graphs.graph import lookup_tensor

import prunekit as pk
from prunekit.config import Config
from prunekit.env import make_env
from prunekit.masks import pruned_positions
from prunekit.runlog import Progress
from prunekit.trainer import Trainer


def small_config(tmp_path, name: str, **train) -> Config:
    cfg = Config()
    cfg.data.name, cfg.data.limit_train, cfg.data.limit_test = "digits", 128, 128  # 2 full batches of 64
    cfg.model.name = "small_cnn"
    cfg.train.epochs, cfg.train.threads, cfg.train.device, cfg.train.deterministic = 3, 1, "cpu", True
    for k, v in train.items():
        setattr(cfg.train, k, v)
    cfg.prune.strategy, cfg.prune.sparsity = "chex", 0.5
    cfg.prune.params = {"delta_T": 1, "T_max": 2}  # events at the ends of epochs 1 and 2
    cfg.run.out, cfg.run.name, cfg.run.progress, cfg.run.latency_runs = str(tmp_path), name, "off", 2
    return cfg


def check_pruned_positions_zero(model, graph, keep, optimizer):
    for (module, param), positions in pruned_positions(graph, keep).items():
        t = lookup_tensor(model, module, param)
        tensors = [t.detach()]
        if isinstance(t, torch.nn.Parameter):
            tensors += [v for v in optimizer.state.get(t, {}).values() if torch.is_tensor(v) and v.shape == t.shape]
        for x in tensors:
            for dim, pos in positions:
                assert bool((x.index_select(dim, pos) == 0).all()), f"{module}.{param} dim {dim}"


def test_channels_last_training_keeps_masks_exact(tmp_path):
    cfg = small_config(tmp_path, "cl", channels_last=True)
    trainer = Trainer(cfg, make_env(cfg), None, None, None)
    trainer.prepare()
    assert trainer.env.channels_last
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    trainer._start_state()
    trainer.progress = Progress(False)
    for epoch in range(2):  # CHEX prunes and regrows at the end of epoch 1
        trainer._train_epoch(epoch)
        trainer.state.update(epoch=epoch + 1, batch=0)
    ctrl = trainer.controller
    assert len(ctrl.events) >= 2 and any(not bool(m.all()) for m in ctrl.keep.values())
    check_pruned_positions_zero(trainer.model, trainer.graph, ctrl.keep, trainer.optimizer)
    model = trainer.model.eval()
    x = torch.randn(8, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    small = pk.slim(model, trainer.graph, ctrl.keep).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), small(x.contiguous()), atol=1e-5)


def first_row(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return next(csv.DictReader(f))


@pytest.mark.slow  # compiling small_cnn takes 1-3 minutes per process on 2 busy cores
def test_compiled_run_with_events_and_resume_matches_uninterrupted(tmp_path):
    full = pk.run(small_config(tmp_path, "full", compile=True))
    assert full.num_events >= 2 and full.slim_max_abs_diff < 1e-4
    # the compiled forward trains the model itself: epoch 1 (before the first event) as in an eager run
    pk.run(small_config(tmp_path, "eager"))
    compiled_loss, eager_loss = (float(first_row(tmp_path / n)["train_loss"]) for n in ("full", "eager"))
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)

    cfg = small_config(tmp_path, "cut", compile=True)
    original = Trainer._end_epoch

    def stop_after_two(self, epoch):
        original(self, epoch)  # the checkpoint of this epoch is written here
        if epoch == 1:
            raise KeyboardInterrupt

    Trainer._end_epoch = stop_after_two
    try:
        with pytest.raises(KeyboardInterrupt):
            pk.run(cfg)
    finally:
        Trainer._end_epoch = original
    cut = tmp_path / "cut"
    assert (cut / "checkpoint.pt").exists() and not (cut / "result.json").exists()
    resumed = pk.run(None, resume=str(cut))
    for key in ("top1", "loss", "kept", "macs", "num_events"):
        assert getattr(full, key) == getattr(resumed, key), key
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["keep"][k], b["keep"][k]) for k in a["keep"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
