"""``train.decay_norm_and_bias``: by default no weight decay on norm-layer weights and biases or on any bias,
as in the CHEX authors' recipe (Filter-GaP training.py get_optimizer), for every strategy alike."""

import torch
from torch import nn

from prunekit.config import load_config
from prunekit.harness import build_optimizer
from prunekit.models import build_model


def _model():
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, in_channels=1, input_size=8)


def test_default_excludes_norm_and_bias_parameters_from_weight_decay():
    cfg = load_config(None)
    assert cfg.train.decay_norm_and_bias is False and "decay_norm_and_bias: false" in cfg.to_yaml()
    model = _model()
    for optimizer in ("sgd", "adamw"):
        cfg.train.optimizer = optimizer
        opt = build_optimizer(model, cfg)
        decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
        no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
        assert decay | no_decay == {id(p) for p in model.parameters()} and not decay & no_decay
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                assert id(m.weight) in no_decay and id(m.bias) in no_decay, name
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                assert id(m.weight) in decay, name
                assert m.bias is None or id(m.bias) in no_decay, name
        assert {g["weight_decay"] for g in opt.param_groups} == {0.0, cfg.train.weight_decay}


def test_decay_everything_when_asked_and_the_effect_of_a_step():
    model = _model()
    cfg = load_config(None, sets=["train.decay_norm_and_bias=true", "train.weight_decay=0.1"])
    opt = build_optimizer(model, cfg)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.1
    cfg = load_config(None, sets=["train.weight_decay=0.1", "train.momentum=0"])
    opt = build_optimizer(model, cfg)
    bn, conv = model.bn1.weight, model.conv1.weight
    bn_before, conv_before = bn.detach().clone(), conv.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only weight decay moves a parameter
    assert torch.equal(bn.detach(), bn_before)
    assert torch.allclose(conv.detach(), conv_before * (1 - cfg.train.lr * 0.1))
