"""Model factories: CIFAR ResNets, the small CNN, torchvision adaptation, user factories, errors."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.models import build_model, check_model, cifar_resnet, list_models, register_model


@pytest.mark.parametrize("depth,convs", [(20, 19 + 2), (32, 31 + 2), (56, 55 + 2)])
def test_cifar_resnet_depth(depth, convs):
    m = cifar_resnet(depth, num_classes=10)
    n_conv = sum(isinstance(x, nn.Conv2d) for x in m.modules())
    assert n_conv == convs  # 6n+1 3x3 convs + 2 option-B 1x1 shortcut convs
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet56_param_count_matches_he_et_al():
    # He et al. report 0.85M parameters for ResNet-56 (option A); option B adds two 1x1 projections
    p = pk.count_params(cifar_resnet(56))
    assert 0.85e6 < p < 0.87e6


def test_cifar_resnet_residual_channels_are_prunable():
    g = pk.build_graph(cifar_resnet(20, in_channels=1), torch.randn(1, 1, 8, 8))
    ids = [grp.id for grp in g.groups]
    # one residual group per stage, anchored at a producer (stem conv or a shortcut conv)
    assert any(len(grp.producers) > 2 for grp in g.groups), ids
    # 9 inner groups (each block's conv1: 3x16, 3x32, 3x64) + 3 residual spaces (16, 32, 64), none frozen
    assert len(g.groups) == 12
    assert g.total_channels == 3 * (16 + 32 + 64) + (16 + 32 + 64)


def test_small_cnn_on_digits_and_fashion_sizes():
    for size in (8, 28):
        m = build_model("small_cnn", 10, 1, size)
        check_model(m, 1, size, 10)


def test_torchvision_adapted_to_one_channel_small_input():
    m = build_model("resnet18", num_classes=7, in_channels=1, input_size=28)
    assert m.conv1.in_channels == 1 and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, nn.Identity)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    big = build_model("resnet18", num_classes=5, in_channels=3, input_size=224)
    assert big.conv1.stride == (2, 2) and big.fc.out_features == 5


def test_user_factory_gets_only_the_arguments_it_takes(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def net(num_classes, width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(width, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_model("mymodels:net", num_classes=3, in_channels=3, input_size=8, width=6)
    assert m[0].out_channels == 6 and m(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        build_model("mymodels:nope")
    with pytest.raises(ValueError, match="cannot import module"):
        build_model("not_a_module_xyz:net")


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError) as e:
        build_model("resnet57")
    assert "did you mean" in str(e.value) and "resnet56" in str(e.value) and "small_cnn" in str(e.value)


def test_register_model_refuses_duplicates():
    @register_model("test_tiny_net")
    def tiny(num_classes=10, in_channels=3, input_size=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))

    assert "test_tiny_net" in list_models()
    assert build_model("test_tiny_net", 4, 1, 5)(torch.randn(2, 1, 5, 5)).shape == (2, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_tiny_net")(lambda **k: None)


def test_check_model_rejects_wrong_outputs():
    with pytest.raises(ValueError, match=r"logits of shape \[N, 10\]"):
        check_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), 1, 8, 10)
