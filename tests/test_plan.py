"""Saving a slimmed model as a pruning plan and loading it in a fresh Python process."""

import subprocess
import sys

import pytest
import torch
import torchvision

import prunekit as pk
from prunekit.testing import random_keep


def test_save_and_load_in_a_fresh_process(tmp_path):
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    g = pk.build_graph(model, x)
    keep = random_keep(g, 0.5, seed=3)
    small = pk.slim(model, g, keep).eval()
    path = tmp_path / "small.pt"
    pk.save_pruned(str(path), small, g, keep, factory="torchvision.models:resnet18", factory_kwargs={"num_classes": 10})
    torch.save({"x": x, "y": small(x).detach()}, tmp_path / "io.pt")
    code = f"""
import torch, prunekit as pk
io = torch.load({str(tmp_path / 'io.pt')!r})
m = pk.load_pruned({str(path)!r}).eval()
torch.testing.assert_close(m(io["x"]), io["y"])
print("ok", sum(p.numel() for p in m.parameters()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "ok" and int(out.stdout.split()[1]) == pk.count_params(small)
    # a fresh instance of the architecture can be passed instead of the factory
    again = pk.load_pruned(str(path), model=torchvision.models.resnet18(num_classes=10)).eval()
    torch.testing.assert_close(again(x), small(x))


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a prunekit plan"):
        pk.load_pruned(str(bad))
    model = torchvision.models.resnet18(num_classes=10)
    g = pk.build_graph(model, torch.randn(1, 3, 32, 32))
    keep = random_keep(g)
    path = tmp_path / "p.pt"
    pk.save_pruned(str(path), pk.slim(model, g, keep), g, keep)
    with pytest.raises(ValueError, match="records no factory"):
        pk.load_pruned(str(path))
    pk.save_pruned(str(path), pk.slim(model, g, keep), g, keep, factory="nowhere.at_all:thing", check=False)
    with pytest.raises(ValueError, match="cannot load the model factory 'nowhere.at_all:thing'"):
        pk.load_pruned(str(path))
