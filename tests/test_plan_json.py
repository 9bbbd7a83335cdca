"""The readable JSON plan (``pk.save_plan`` / ``pk.load_plan``, ``prunekit export RUN --plan``): replayed onto a
fresh model of the original class plus a state_dict in another process, without the channel graph or slimming
code, exactly as ``pk.slim`` built it; and a clear error for a plan that does not fit the model."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from prunekit.graphs.layers import PrunedMultiheadAttention
from torchvision.models.vision_transformer import VisionTransformer

import prunekit as pk
from prunekit.plan import plan_dict
from prunekit.testing import random_keep, randomize_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORY = "torchvision.models:resnet18"


def _pruned_resnet18(seed=3):
    model = randomize_parameters(torchvision.models.resnet18(num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    g = pk.build_graph(model, x)
    keep = random_keep(g, 0.5, seed=seed)
    return model, g, keep, pk.slim(model, g, keep).eval(), x


def _python(code, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def test_plan_replays_in_a_fresh_process_without_graph_or_slim(tmp_path):
    model, g, keep, small, x = _pruned_resnet18()
    path = tmp_path / "plan.json"
    plan = pk.save_plan(str(path), model, g, keep, factory=FACTORY, factory_kwargs={"num_classes": 10})
    torch.save(small.state_dict(), tmp_path / "slim.pt")
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    torch.save({"x": x, "y": small(x).detach()}, tmp_path / "io.pt")
    # readable: per group the kept channel indices and where they live; per tensor the kept indices per dim
    data = json.loads(path.read_text())
    assert data["format"] == "prunekit-plan-json" and data["version"] == 1 and data["factory"] == FACTORY
    grp = data["groups"][0]
    assert grp["kept"] == torch.nonzero(keep[grp["id"]]).flatten().tolist()
    assert {"module", "param", "dim", "role"} <= set(grp["members"][0])
    conv1 = next(t for t in data["tensors"] if t["name"] == "conv1.weight")
    assert conv1["shape"] == [64, 3, 7, 7] and conv1["kept"]["0"] == grp["kept"]
    assert {"module": "conv1", "attr": "out_channels", "before": 64, "after": len(grp["kept"])} in data["attributes"]
    assert data == json.loads(json.dumps(plan))
    # a fresh process in which the graph and slimming code cannot run: the plan alone rebuilds the model
    code = f"""
import torch, torchvision, prunekit as pk, prunekit.plan as plan
def refuse(*a, **k):
    raise AssertionError("load_plan used the channel graph or slim()")
plan.slim = pk.slim = pk.build_graph = refuse
import prunekit.graphs as graphs
graphs.ChannelGraph.from_dict = classmethod(refuse)
io = torch.load({str(tmp_path / "io.pt")!r})
a = pk.load_plan({str(path)!r}, state_dict={str(tmp_path / "slim.pt")!r})          # factory + slimmed weights
b = pk.load_plan({str(path)!r}, model=torchvision.models.resnet18(num_classes=10),
                 state_dict=torch.load({str(tmp_path / "dense.pt")!r}))               # own instance + dense weights
assert not a.training and not b.training
with torch.no_grad():
    torch.testing.assert_close(a(io["x"]), io["y"], rtol=0, atol=0)
    torch.testing.assert_close(b(io["x"]), io["y"], rtol=0, atol=0)
print("ok", sum(p.numel() for p in a.parameters()))
"""
    r = _python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["ok", str(pk.count_params(small))]


def test_plan_records_layer_class_changes():
    """Pruning a transformer's stream switches nn.MultiheadAttention to prunekit's pruned form: the plan says
    so, and replays it."""
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
    model = randomize_parameters(VisionTransformer(**cfg)).eval()
    x = torch.randn(2, 3, 32, 32)
    g = pk.build_graph(model, x)
    keep = random_keep(g, 0.5, seed=1)
    small = pk.slim(model, g, keep).eval()
    factory = "torchvision.models.vision_transformer:VisionTransformer"
    plan = plan_dict(model, g, keep, factory=factory, factory_kwargs=cfg)
    changed = {c["module"]: c["after"] for c in plan["classes"]}
    assert changed["encoder.layers.encoder_layer_0.self_attention"] == "prunekit.graphs.layers:PrunedMultiheadAttention"
    again = pk.load_plan(plan, state_dict=small.state_dict())
    assert isinstance(again.encoder.layers[0].self_attention, PrunedMultiheadAttention)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), rtol=0, atol=0)
    # a plan is data: it cannot give a module a class from outside prunekit
    bad = json.loads(json.dumps(plan))
    bad["classes"][0]["after"] = "collections:OrderedDict"
    with pytest.raises(ValueError, match="only prunekit's own layer classes"):
        pk.load_plan(bad, state_dict=small.state_dict())


def test_plans_that_do_not_fit_are_refused(tmp_path):
    model, g, keep, small, _ = _pruned_resnet18()
    path = tmp_path / "plan.json"
    pk.save_plan(str(path), model, g, keep, factory=FACTORY, factory_kwargs={"num_classes": 10})
    unknown = r"does not fit the model: the model has tensors the plan does not know \(layer1\.2\.conv1\.weight"
    with pytest.raises(ValueError, match=unknown):
        pk.load_plan(str(path), model=torchvision.models.resnet34(num_classes=10))  # another architecture
    with pytest.raises(ValueError, match=r"fc\.weight has shape \[100, 512\], the plan was made for \[10, 512\]"):
        pk.load_plan(str(path), model=torchvision.models.resnet18(num_classes=100))  # another size
    with pytest.raises(ValueError, match="fits neither the dense nor the slimmed model"):
        pk.load_plan(str(path), state_dict=torchvision.models.resnet18(num_classes=100).state_dict())
    data = json.loads(path.read_text())
    future = dict(data, version=2)
    with pytest.raises(ValueError, match="version-2 plan; this prunekit reads version 1 and older: upgrade prunekit"):
        pk.load_plan(future)
    with pytest.raises(ValueError, match="not a prunekit JSON plan"):
        pk.load_plan({k: v for k, v in data.items() if k != "format"})
    pt = tmp_path / "small.pt"
    pk.save_pruned(str(pt), small, g, keep)
    with pytest.raises(ValueError, match="not a prunekit JSON plan.*load_pruned"):
        pk.load_plan(str(pt))
    # save_plan refuses a factory whose model the plan does not fit (load_plan could not rebuild it)
    with pytest.raises(ValueError, match="does not fit the model"):
        pk.save_plan(str(tmp_path / "x.json"), model, g, keep, factory=FACTORY, factory_kwargs={"num_classes": 7})
    assert not (tmp_path / "x.json").exists()
