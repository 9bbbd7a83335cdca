"""Every bad input of issue 12 (items 1-8) through the real CLI: ``python -m prunekit ...`` in a subprocess, in a
fresh working directory with its own ``runs/``. Each must exit with status 2 (130 for Ctrl-C), print ONE line on
stderr (``prunekit: error: ...``, no traceback) that says what is wrong in the user's terms, and leave no new
directory under ``runs/``. Errors that happen once training runs (a strategy's wrong return value, divergence)
come after the run's own ``[prunekit] ...`` log lines; everything else fails before the run directory exists, so
stderr is that one line alone. The API items (a graph of another model, plans that cannot be loaded) are at
the end. The default suite runs in about 2 minutes of CPU; the two Ctrl-C tests (items 6 and 7) are marked slow.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_helpers import run_prunekit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# cheap: the embedded digits data, a small CNN, one epoch of two batches
QUICK = [
    "--dataset",
    "digits",
    "--model",
    "small_cnn",
    "--epochs",
    "1",
    "--set",
    "data.limit_train=128",
    "--set",
    "data.limit_test=64",
    "--set",
    "run.latency_runs=2",
]

PLUGINS = {
    # a strategy class without prune(): abstract, refused when the plugin registers it
    "noprune_plugin.py": '''
import prunekit as pk

@pk.register_strategy("noprune")
class NoPrune(pk.Strategy):
    """Forgot prune()."""
''',
    # prune() returns what tensor.topk returns (values, indices), not a bool mask
    "topk_plugin.py": '''
import prunekit as pk

@pk.register_strategy("topk")
class TopK(pk.Strategy):
    """Returns tensor.topk(k): the classic mistake."""

    def prune(self, state, group, keep):
        return state.channel_norms(group).topk(keep)
''',
    # keeps the largest channels; sleeps in its event at step ``sleep_at`` while the file $SLEEPY_FLAG exists,
    # so that a test can interrupt the run at a known point
    "sleepy_plugin.py": '''
import os
import time

import prunekit as pk
from prunekit.strategy import Param, Schedule, top_k_mask

@pk.register_strategy("sleepy")
class Sleepy(pk.Strategy):
    """Magnitude pruning at step 0 and at sleep_at, where it sleeps while $SLEEPY_FLAG exists."""

    params = {"sleep_at": Param(int, 1, min=1)}

    def schedule(self, steps_per_epoch, epochs):
        return Schedule((0, self.sleep_at))

    def prune(self, state, group, keep):
        flag = os.environ.get("SLEEPY_FLAG", "")
        if state.step == self.sleep_at and flag and os.path.exists(flag):
            open(flag + ".sleeping", "w").close()
            time.sleep(300)
        return top_k_mask(state.channel_norms(group), keep)
''',
    # turns every weight into NaN at its event at step ``at``: the next loss is not finite
    "blowup_plugin.py": '''
import torch

import prunekit as pk
from prunekit.strategy import Param, Schedule, top_k_mask

@pk.register_strategy("blowup")
class BlowUp(pk.Strategy):
    """Makes the weights NaN at step ``at`` (a stand-in for a run that diverges)."""

    params = {"at": Param(int, 0, min=0)}

    def schedule(self, steps_per_epoch, epochs):
        return Schedule((0, self.at))

    def prune(self, state, group, keep):
        if state.step == self.at and group.id == state.graph.groups[0].id:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.fill_(float("nan"))
        return top_k_mask(torch.arange(group.size, dtype=torch.float32), keep)
''',
    # a model whose top-level forward fx cannot trace (data-dependent control flow)
    "untraceable_model.py": """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            y = y * 2
        return self.fc(y.mean((2, 3)))

def net(num_classes=10, in_channels=1, input_size=8):
    return Net(num_classes)
""",
}


@pytest.fixture
def work(tmp_path):
    """A working directory with an empty runs/ and the plugin modules above."""
    (tmp_path / "runs").mkdir()
    for name, text in PLUGINS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def pk(*args, cwd, timeout=300, env=None):
    return run_prunekit(*args, cwd=cwd, timeout=timeout, env=env)


def error_line(r, work, training_log=False, existing=()):
    """The one error line of a bad input (exit 2, no traceback, nothing new under runs/ beside ``existing``)."""
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    if training_log:  # the run's progress lines came first; they are not part of the error
        lines = [line for line in lines if not line.startswith("[prunekit] ")]
    assert len(lines) == 1 and lines[0].startswith("prunekit: error: "), r.stderr
    assert sorted(os.listdir(work / "runs")) == sorted(existing), "a failed run left a directory behind"
    return lines[0]


# (id, arguments after `prunekit run`, words the line must hold, words it must not hold)
BEFORE_TRAINING = [
    # 1. tracebacks before
    ("batch-size-0", ["--batch-size", "0"], ["train.batch_size (--batch-size) must be >= 1", "got 0"], []),
    ("image-size-0", ["--image-size", "0"], ["data.image_size (--image-size) must be >= 1"], []),
    ("limit-test-0", ["--set", "data.limit_test=0"], ["data.limit_test must be >= 1"], []),
    (
        "depth-kwarg",
        ["--model", "resnet20", "--set", "model.kwargs.depth=3"],
        ["model.kwargs.depth", "resnet20", "--model resnet20, resnet32"],
        ["multiple values"],
    ),
    ("unknown-kwarg", ["--set", "model.kwargs.nope=1"], ["'small_cnn' cannot take model.kwargs.nope=1"], []),
    ("data-kwarg", ["--set", "model.kwargs.num_classes=3"], ["model.kwargs.num_classes is set by prunekit"], []),
    (
        "abstract-plugin",
        ["--plugins", "noprune_plugin", "--strategy", "noprune"],
        ["--plugins noprune_plugin", "'noprune'", "abstract: implement prune"],
        [],
    ),
    # 3. validated before the run directory exists
    ("unknown-dataset", ["--dataset", "nosuch"], ["unknown dataset 'nosuch'"], []),
    ("unknown-model", ["--model", "nosuch"], ["unknown model 'nosuch'"], []),
    (
        "missing-cifar",
        ["--dataset", "cifar10", "--data-root", "no_cifar_here"],
        ["CIFAR-10 not found", "cifar-10-python.tar.gz", "--data-root"],
        ["download=True"],
    ),
    ("epochs-0", ["--epochs", "0"], ["train.epochs (--epochs) must be >= 1"], ["steps_per_epoch"]),
    ("negative-lr", ["--lr", "-1"], ["train.lr (--lr) must be > 0", "-1"], ["Invalid learning rate"]),
    ("infinite-lr", ["--set", "train.lr=.inf"], ["train.lr must be a finite number"], []),
    ("round-to-0", ["--round-to", "0"], ["prune.round_to (--round-to) must be >= 1"], ["Budget"]),
    ("macs-floor", ["--macs", "0.001"], ["MACs budget keeps 0.001", "ask for macs >="], []),
    # 4. in the user's terms
    ("limit-train-0", ["--set", "data.limit_train=0"], ["data.limit_train must be >= 1"], ["DDP"]),
    ("strategy-case", ["--strategy", "CHEX"], ["unknown strategy 'CHEX'; did you mean 'chex'?"], []),
    (
        "input-too-small",  # digits are 8x8: VGG's five poolings run out of pixels
        ["--model", "vgg11_bn"],
        ["vgg11_bn does not accept inputs of shape [N, 1, 8, 8]", "Output size is too small", "data.image_size"],
        ["While executing", "tlparse"],
    ),
    (
        "untraceable-model",
        ["--plugins", "untraceable_model", "--model", "untraceable_model:net"],
        ["torch.fx cannot trace the forward of Net"],
        ["Original traceback", "tlparse"],
    ),
]


@pytest.mark.parametrize("args,words,absent", [c[1:] for c in BEFORE_TRAINING], ids=[c[0] for c in BEFORE_TRAINING])
def test_bad_input_fails_before_the_run_directory(work, args, words, absent):
    line = error_line(pk("run", *QUICK, *args, cwd=work), work)
    for w in words:
        assert w in line, line
    for w in absent:
        assert w not in line, line


def test_graph_of_a_model_its_input_is_too_small_for_is_one_line(work):
    # the channel graph runs the model once on the example: its error names the node and the flag, without
    # fx's node dump and tlparse advice
    line = error_line(pk("graph", "--model", "vgg11_bn", "--dataset", "digits", cwd=work), work)
    for w in ("running the model on example_inputs failed at node", "Output size is too small", "--image-size"):
        assert w in line, line
    assert "While executing" not in line and "tlparse" not in line


def test_compare_with_a_missing_dataset_fails_once_before_any_run(work):
    # 3. what every strategy would fail on alike is one error, before the compare directory exists
    r = pk("compare", *QUICK, "--dataset", "cifar100", "--data-root", "no_cifar_here", cwd=work)
    line = error_line(r, work)
    assert "CIFAR-100 not found" in line and "strategy" not in line, line


def test_wrong_prune_return_type_names_strategy_group_and_debug(work):
    # 2. prune() returned a (values, indices) pair: strategy, method, group, what was expected, and --debug
    args = ["run", *QUICK, "--plugins", "topk_plugin", "--strategy", "topk"]
    line = error_line(pk(*args, cwd=work), work)
    for w in ("strategy 'topk'", "prune()", "torch.return_types.topk", "group 'features.0.0'", "bool tensor of shape"):
        assert w in line, line
    assert line.endswith("(--debug shows the traceback)"), line
    r = pk(*args, "--debug", cwd=work)
    assert r.returncode != 0 and "Traceback" in r.stderr and "StrategyError" in r.stderr


@pytest.mark.parametrize("strategy", ["magnitude", "chex"])
def test_divergence_stops_with_one_line(work, strategy):
    # 8. lr 1000: the loss is NaN within a few steps (resnet20 on digits); the run stops with one line
    args = ["run", "--dataset", "digits", "--epochs", "3", "--lr", "1000", "--strategy", strategy]
    line = error_line(pk(*args, cwd=work), work, training_log=True)
    for w in ("training diverged at step", "(epoch 1)", "loss nan", "lower the learning rate", "--lr, now 1000"):
        assert w in line, line


def test_divergence_keeps_the_checkpoint_before_it(work):
    # 8. a run that diverges after its first checkpoint (epoch 1 = steps 1-2; the weights go NaN at step 3)
    # keeps that checkpoint and says so; the weights of the diverged steps are never written
    args = ["run", *QUICK[:4], "--epochs", "3", *QUICK[6:], "--plugins", "blowup_plugin", "--strategy", "blowup"]
    r = pk(*args, "--set", "prune.params.at=3", "--name", "d", cwd=work)
    line = error_line(r, work, training_log=True, existing=["d"])
    run_dir = work / "runs" / "d"
    assert "training diverged at step 4 (epoch 2): loss nan" in line, line
    assert f"the checkpoint before it is kept ({run_dir})" in line, line
    assert json.loads((run_dir / "checkpoint.json").read_text())["epoch"] == 1
    blob = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert all(bool(torch.isfinite(v).all()) for v in blob["model"].values() if v.is_floating_point())
    assert not (run_dir / "result.json").exists()


def test_compare_marks_a_diverged_strategy_and_finishes_the_others(work):
    # 8. in a comparison the diverged strategy's row says "diverged"; magnitude still finishes
    r = pk(
        "compare",
        *QUICK,
        "--plugins",
        "blowup_plugin",
        "--strategies",
        "magnitude,blowup",
        "--out",
        "runs",
        "--name",
        "cmp",
        cwd=work,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    rows = {row["strategy"]: row for row in json.loads((work / "runs" / "cmp" / "comparison.json").read_text())}
    assert rows["magnitude"]["status"] == "ok"
    assert rows["blowup"]["status"] == "diverged"
    assert "diverged" in r.stdout
    result = json.loads((work / "runs" / "cmp" / "blowup" / "result.json").read_text())
    assert result["status"] == "diverged" and "training diverged at step 1" in result["error"]


def _interrupt(work, extra, epochs, command=("run", "--strategy", "sleepy")):
    """Start a sleepy run (or ``command``), wait until its strategy sleeps, send SIGINT; returns (result, the
    directory it made under runs/)."""
    flag = work / "flag"
    flag.write_text("")
    args = [sys.executable, "-m", "prunekit", command[0], *QUICK[:4], "--epochs", str(epochs), *QUICK[6:]]
    args += ["--plugins", "sleepy_plugin", *command[1:], *extra]
    env = dict(os.environ, PYTHONPATH=ROOT, SLEEPY_FLAG=str(flag))
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (work / "flag.sleeping").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    flag.unlink()
    (work / "flag.sleeping").unlink()
    (run_dir,) = list((work / "runs").iterdir())
    return subprocess.CompletedProcess(args, proc.returncode, out, err), run_dir


@pytest.mark.slow  # three CLI runs, one interrupted mid-run (about 24 s of CPU)
def test_ctrl_c_before_the_first_checkpoint_says_how_to_resume_and_resume_restarts(work):
    # 6. Ctrl-C at step 1 (no checkpoint yet): exit 130 and "resume with --resume DIR"; resuming starts the
    # run again from the beginning and finishes; resuming the finished run says it is finished
    r, run_dir = _interrupt(work, ["--set", "prune.params.sleep_at=1"], epochs=1)
    assert r.returncode == 130, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"prunekit: interrupted; resume with --resume {run_dir}", r.stderr
    assert not (run_dir / "checkpoint.pt").exists() and (run_dir / "config.yaml").exists()
    r = pk("run", "--plugins", "sleepy_plugin", "--resume", str(run_dir), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(no checkpoint: from the start)" in r.stderr
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    r = pk("run", "--plugins", "sleepy_plugin", "--resume", str(run_dir), cwd=work)
    line = error_line(r, work, existing=[run_dir.name])
    assert f"{run_dir} is finished (1 of 1 epochs); nothing to resume" in line, line
    assert "resumed at epoch" not in r.stderr


@pytest.mark.slow  # a comparison interrupted in its second run, then resumed (about 20 s of CPU)
def test_ctrl_c_in_compare_names_the_compare_directory_and_compare_resume_finishes_it(work):
    command = ("compare", "--strategies", "magnitude,sleepy", "--name", "cmp")
    r, cmp_dir = _interrupt(work, ["--set", "prune.strategy_params.sleepy.sleep_at=3"], epochs=2, command=command)
    assert r.returncode == 130 and r.stderr.strip().endswith(f"resume with --resume {cmp_dir}"), r.stderr
    assert (cmp_dir / "magnitude" / "result.json").exists() and not (cmp_dir / "sleepy" / "result.json").exists()
    magnitude = (cmp_dir / "magnitude" / "result.json").read_bytes()
    r = pk("compare", "--plugins", "sleepy_plugin", "--resume", str(cmp_dir), cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "magnitude: kept (ok" in r.stderr and "resumed at epoch 2" in (cmp_dir / "sleepy" / "run.log").read_text()
    assert (cmp_dir / "magnitude" / "result.json").read_bytes() == magnitude
    rows = json.loads((cmp_dir / "comparison.json").read_text())
    assert [(row["strategy"], row["status"]) for row in rows] == [("magnitude", "ok"), ("sleepy", "ok")]


@pytest.mark.slow  # two CLI runs, one interrupted mid-run (about 16 s of CPU)
def test_export_of_an_unfinished_run_says_so(work):
    # 7. Ctrl-C in epoch 2, after the first checkpoint; the export warns that the model is not at its budget
    r, run_dir = _interrupt(work, ["--set", "prune.params.sleep_at=3"], epochs=3)
    assert r.returncode == 130 and r.stderr.strip().endswith(f"resume with --resume {run_dir}"), r.stderr
    assert json.loads((run_dir / "checkpoint.json").read_text())["epoch"] == 1
    r = pk("export", str(run_dir), "--plugins", "sleepy_plugin", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [line for line in r.stderr.strip().splitlines() if line.startswith("prunekit: warning: ")]
    assert len(warn) == 1, r.stderr
    for w in ("UNFINISHED", "epoch 1 of 3", "not at its budget", f"--resume {run_dir}"):
        assert w in warn[0], warn[0]
    assert "UNFINISHED" in (run_dir / "export" / "LOAD.md").read_text()


# ---------------------------------------------------------------------------------------- API (item 5)


def _resnets():
    from prunekit.models import build_model

    return build_model("resnet20", 10, 1, 8), build_model("resnet32", 10, 1, 8)


def test_slim_refuses_the_graph_of_another_model():
    import prunekit as pk
    from prunekit.testing import random_keep

    r20, r32 = _resnets()
    g = pk.build_graph(r20, torch.zeros(1, 1, 8, 8))
    keep = random_keep(g, 0.5, seed=0)
    with pytest.raises(ValueError, match="CifarResNet is not the model the graph was built on: it has parameters"):
        pk.slim(r32, g, keep)  # the same widths: only the extra blocks tell them apart
    with pytest.raises(ValueError, match="not the model the graph was built on"):
        pk.apply_masks(r32, g, keep)
    small = pk.slim(r20, g, keep)
    with pytest.raises(ValueError, match=r"conv1.weight has shape .* \(is this model slimmed already\?\)"):
        pk.slim(small, g, keep)
    again = pk.ChannelGraph.from_dict(json.loads(g.to_json()))  # the record survives a plan / JSON
    with pytest.raises(ValueError, match="not the model the graph was built on"):
        pk.slim(r32, again, keep)


def test_save_pruned_refuses_a_plan_that_cannot_be_loaded_and_load_returns_eval(tmp_path):
    import prunekit as pk
    from prunekit.testing import random_keep

    model, _ = _resnets()
    g = pk.build_graph(model, torch.zeros(1, 1, 8, 8))
    keep = random_keep(g, 0.5, seed=0)
    small = pk.slim(model, g, keep)
    path = str(tmp_path / "p.pt")
    spec = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 8}
    for wrong in ({**spec, "name": "resnet32"}, {**spec, "in_channels": 3}, {**spec, "num_classes": 5}):
        with pytest.raises(ValueError, match="does not rebuild the saved model"):
            pk.save_pruned(path, small, g, keep, factory="prunekit.models:build_model", factory_kwargs=wrong)
        assert not os.path.exists(path)
    pk.save_pruned(path, small, g, keep, factory="prunekit.models:build_model", factory_kwargs=spec)
    loaded = pk.load_pruned(path)
    assert not loaded.training and not any(m.training for m in loaded.modules())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), small.eval()(x))
