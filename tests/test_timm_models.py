"""timm models in the harness: ``--model timm:<name>`` and ``model.leaf_modules``.

Tests that need timm skip when it is not installed (``pip install 'prunekit[timm]'``); the missing-timm
error is simulated, so it runs either way. Small models at tiny inputs: each test is a few seconds.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.cli import build_parser, config_from_args, main
from prunekit.config import ConfigError, load_config
from prunekit.models import TIMM_INSTALL, build_model, check_model, resolve_leaf_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


@pytest.fixture(scope="module")
def resnet10t(timm):
    return build_model("timm:resnet10t", num_classes=7, in_channels=1, input_size=8)


# ---------------------------------------------------------------------------------------- building


def test_timm_model_gets_the_datasets_classes_and_channels(resnet10t):
    m = resnet10t
    assert type(m).__module__.startswith("timm.")
    first = next(x for x in m.modules() if isinstance(x, nn.Conv2d))
    assert first.in_channels == 1 and m.num_classes == 7
    check_model(m, 1, 8, 7, "timm:resnet10t")  # [2, 1, 8, 8] -> [2, 7]
    g = pk.build_graph(m, torch.zeros(1, 1, 8, 8))
    assert len(g.groups) > 0 and g.total_channels > 0


def test_timm_kwargs_reach_create_model(timm):
    m = build_model("timm:resnet10t", 10, 3, 32, drop_rate=0.25)
    assert m.drop_rate == 0.25


def test_unknown_timm_name_suggests_close_matches(timm):
    with pytest.raises(ValueError) as e:
        build_model("timm:resnett10t", 10, 3, 32)
    msg = str(e.value)
    assert "unknown timm model 'resnett10t'" in msg and "'timm:resnet10t'" in msg and "\n" not in msg


def test_timm_prefix_is_never_a_package_factory(timm):
    # "timm:create_model" would be getattr(timm, "create_model") in the package:factory form
    with pytest.raises(ValueError, match="unknown timm model 'create_model'"):
        build_model("timm:create_model", 10, 3, 32)


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("timm:resnet10t", {"pretrained": True}, "prunekit never downloads weights"),
        ("timm:hf-hub:timm/resnet18.a1_in1k", {}, "never downloads"),
        ("timm:resnet10t", {"in_chans": 3}, "model.kwargs.in_chans is set by prunekit"),
    ],
)
def test_downloads_and_conflicting_kwargs_are_refused(timm, name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, 10, 3, 32, **kwargs)


def test_missing_timm_is_one_line_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ImportError) as e:
        build_model("timm:resnet10t", 10, 3, 32)
    assert TIMM_INSTALL in str(e.value) and "\n" not in str(e.value)
    assert main(["graph", "--model", "timm:resnet10t", "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "prunekit: error:" in err and TIMM_INSTALL in err


def test_list_models_mentions_timm(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "timm:<name>: any timm model (pip install 'prunekit[timm]'), e.g. timm:resnet18" in out
    assert "installed)" in out


# ---------------------------------------------------------------------------------------- leaf modules


def test_leaf_modules_config_flag_and_set():
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["run", "--leaf-modules", "layer4, Conv2dSame"]))
    assert cfg.model.leaf_modules == ["layer4", "Conv2dSame"]
    cfg = load_config(sets=["model.leaf_modules=[a, timm.layers.Conv2dSame]"])
    assert cfg.model.leaf_modules == ["a", "timm.layers.Conv2dSame"]
    assert load_config().model.leaf_modules == []
    with pytest.raises(ConfigError, match="model.leaf_modules must be a list"):
        load_config(sets=["model.leaf_modules=layer4"])


def test_leaf_modules_resolve_names_classes_and_paths(resnet10t):
    m = resnet10t
    block = type(m.layer1[0])  # timm.models.resnet.BasicBlock
    assert resolve_leaf_modules(m, []) == []
    assert resolve_leaf_modules(m, ["layer4.0"]) == ["layer4.0"]
    assert resolve_leaf_modules(m, ["BasicBlock"]) == [block]
    assert resolve_leaf_modules(m, [f"{block.__module__}.BasicBlock"]) == [block]
    assert resolve_leaf_modules(m, ["timm.models.BasicBlock"]) == [block]  # a re-export imports to the class
    full = pk.build_graph(m, torch.zeros(1, 1, 8, 8))
    opaque = pk.build_graph(m, torch.zeros(1, 1, 8, 8), leaf_modules=resolve_leaf_modules(m, ["BasicBlock"]))
    assert opaque.total_channels < full.total_channels  # channels at the blocks' boundaries are frozen


@pytest.mark.parametrize(
    "entry,message",
    [
        ("BasicBlok", "did you mean 'BasicBlock'"),
        ("layer9.0", "matches no submodule or class"),
        ("timm.layers.Conv2dSame", "names class Conv2dSame, not used in the model ResNet"),
    ],
)
def test_leaf_module_matching_nothing_is_an_error(resnet10t, entry, message):
    with pytest.raises(ValueError) as e:
        resolve_leaf_modules(resnet10t, [entry])
    assert f"model.leaf_modules: {entry!r}" in str(e.value) and message in str(e.value)


def test_leaf_module_error_on_the_cli_is_one_line_exit_2(timm, capsys):
    rc = main(["graph", "--model", "timm:resnet10t", "--dataset", "digits", "--leaf-modules", "BasicBlok"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0
    assert "'BasicBlok'" in err and "did you mean 'BasicBlock'" in err


def test_graph_command_with_leaf_modules(timm, capsys):
    assert main(["graph", "--model", "timm:resnet10t", "--dataset", "digits", "--leaf-modules", "layer4"]) == 0
    with_leaf = capsys.readouterr().out
    assert main(["graph", "--model", "timm:resnet10t", "--dataset", "digits"]) == 0
    without = capsys.readouterr().out
    assert "prunable groups" in with_leaf and with_leaf != without


# ---------------------------------------------------------------------------------------- a run


def test_prunekit_run_timm_resnet10t_on_digits(timm, tmp_path):
    """A whole `prunekit run --model timm:resnet10t` job (1 epoch, 64 samples) through the entry point,
    with a leaf module so the harness passes model.leaf_modules to the graph."""
    args = [
        "run", "--strategy", "magnitude", "--dataset", "digits", "--model", "timm:resnet10t",
        "--leaf-modules", "layer4.0", "--epochs", "1", "--batch-size", "32", "--progress", "plain",
        "--out", str(tmp_path), "--name", "timm1",
        "--set", "data.limit_train=64", "--set", "data.limit_test=32", "--set", "train.bn_recalibration=0",
        "--set", "run.latency_runs=2", "--set", "run.latency_batch=4",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "prunekit", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "timm1"
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "ok" and res["model"] == "timm:resnet10t"
    assert res["macs"] < res["dense_macs"] and res["slim_max_abs_diff"] < 1e-3
    assert "layer4.0" in (run_dir / "config.yaml").read_text()
    small = pk.load_pruned(str(run_dir / "model_pruned.pt"))
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    from prunekit.harness import export_run

    # export rebuilds the graph with the run's leaf_modules, so the saved masks' group ids match
    paths = export_run(str(run_dir), str(tmp_path / "exp" / "small.pt"))
    assert pk.count_params(pk.load_pruned(paths["plan"])) == res["params"]
