"""Opening a file someone sent must not run their code. Hostile plans, checkpoints and run directories are
refused with a one-line error, through the public API and the CLI, and the side effect they were built for
(a file created on load) never happens. Checkpoints of the first format load only with --trust-checkpoint."""

import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import prunekit as pk
from prunekit import checkpoint as ckpt
from prunekit.config import from_dict
from prunekit.harness import export_run
from prunekit.models import small_cnn
from prunekit.testing import random_keep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BIN = os.path.join(os.path.dirname(sys.executable), "prunekit")
CLI = [_BIN] if os.path.exists(_BIN) else [sys.executable, "-m", "prunekit"]
CONFIG = {
    "data": {"name": "digits"},
    "model": {"name": "small_cnn"},
    "train": {"epochs": 1, "batch_size": 64, "threads": 1},
    "prune": {"strategy": "chex", "sparsity": 0.5},
    "run": {"progress": "off", "latency_runs": 2},
}


class Payload:
    """Pickles as ``fn(*args)``: what a hostile file runs when it is unpickled."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


PAYLOADS = {
    "os.system": lambda m: Payload(os.system, f"touch {m}"),
    "open": lambda m: Payload(open, str(m), "w"),
    "Path.touch": lambda m: Payload(pathlib.Path.touch, pathlib.Path(m)),
}


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_refused(r, marker, *words):
    """Exit status 2, one line on stderr naming ``words``, no traceback, no side effect."""
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunekit: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]
    assert not marker.exists()


def assert_one_line(err, *words):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def write_plan(path, factory, kwargs):
    model = small_cnn(num_classes=10, in_channels=1, input_size=8)
    g = pk.build_graph(model, torch.zeros(1, 1, 8, 8))
    keep = random_keep(g, 0.5, seed=0)
    # check=False: save_pruned would call the factory to check that the plan loads; these plans are attacks
    pk.save_pruned(str(path), pk.slim(model, g, keep), g, keep, factory=factory, factory_kwargs=kwargs, check=False)


def write_run_dir(folder, blob, config=CONFIG):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(from_dict(config).to_yaml())
    torch.save(blob, folder / ckpt.CHECKPOINT)
    return folder


# ---------------------------------------------------------------------------------------- plans

HOSTILE_FACTORIES = {
    "subprocess:run": lambda m: {"args": ["touch", str(m)]},
    "os:system": lambda m: {"command": f"touch {m}"},
    "builtins:eval": lambda m: {"source": f"open({str(m)!r}, 'w')"},
    # inside a trusted package, but a private module's file downloader, not a model factory
    "timm.models._hub:download_url_to_file": lambda m: {"url": f"file://{ROOT}/README.md", "dst": str(m)},
}


@pytest.mark.parametrize("factory", sorted(HOSTILE_FACTORIES))
def test_plan_with_untrusted_factory_is_refused(tmp_path, factory):
    marker = tmp_path / "pwned"
    path = tmp_path / "plan.pt"
    write_plan(path, factory, HOSTILE_FACTORIES[factory](marker))
    with pytest.raises(ValueError) as err:
        pk.load_pruned(str(path))
    assert_one_line(err, repr(factory), "not trusted", f"trusted_factories=[{factory!r}]")
    assert not marker.exists()


def test_plan_naming_a_hostile_model_through_build_model_is_refused(tmp_path):
    """prunekit.models:build_model is trusted, but it imports the "package.module:callable" it is given."""
    marker = tmp_path / "pwned"
    path = tmp_path / "plan.pt"
    write_plan(path, "prunekit.models:build_model", {"name": "os:system", "command": f"touch {marker}"})
    with pytest.raises(ValueError) as err:
        pk.load_pruned(str(path))
    assert_one_line(err, "'os:system'", "not trusted")
    assert not marker.exists()


def test_untrusted_factory_module_is_not_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "sec_evil_nets.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from prunekit.models import small_cnn\n"
        "def net():\n"
        "    return small_cnn(num_classes=10, in_channels=1, input_size=8)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "plan.pt"
    write_plan(path, "sec_evil_nets:net", {})
    with pytest.raises(ValueError) as err:
        pk.load_pruned(str(path))
    assert_one_line(err, "'sec_evil_nets:net'", "not trusted")
    assert not marker.exists() and "sec_evil_nets" not in sys.modules
    # named by the caller (the factory itself, or its module): trusted, imported and built
    for trusted in (["sec_evil_nets:net"], ["sec_evil_nets"]):
        small = pk.load_pruned(str(path), trusted_factories=trusted)
        assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert marker.exists()
    monkeypatch.delitem(sys.modules, "sec_evil_nets")


@pytest.mark.parametrize(
    "kwargs",
    [{"num_classes": torch.tensor(10)}, {"num_classes": 10, "dtype": torch.float32}, {"extra": {1: "one"}}],
    ids=["tensor", "dtype", "int-key"],
)
def test_plan_with_non_data_kwargs_is_refused(tmp_path, kwargs):
    path = tmp_path / "plan.pt"
    write_plan(path, "prunekit.models:small_cnn", kwargs)
    with pytest.raises(ValueError) as err:
        pk.load_pruned(str(path))
    assert_one_line(err, "'prunekit.models:small_cnn'", "not plain data")


def test_trusted_factories_load(tmp_path):
    path = tmp_path / "plan.pt"
    write_plan(path, "prunekit.models:small_cnn", {"num_classes": 10, "in_channels": 1, "input_size": 8})
    assert pk.load_pruned(str(path))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


# ---------------------------------------------------------------------------------------- checkpoints


def test_payload_is_live(tmp_path):
    """The hostile checkpoints below really run code when unpickled in full (so their refusal means something)."""
    for name, make in PAYLOADS.items():
        marker = tmp_path / f"live-{name}"
        torch.save({"x": make(marker)}, tmp_path / "c.pt")
        torch.load(tmp_path / "c.pt", weights_only=False)
        assert marker.exists(), name


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_hostile_checkpoint_is_refused_by_resume_and_export(tmp_path, payload):
    marker = tmp_path / "pwned"
    run_dir = write_run_dir(tmp_path / "run", {"format": ckpt.FORMAT, "epoch": 1, "x": PAYLOADS[payload](marker)})
    for call in (lambda: pk.run(resume=str(run_dir)), lambda: export_run(str(run_dir))):
        with pytest.raises(ValueError) as err:
            call()
        assert_one_line(err, "checkpoint.pt", "pickled", "--trust-checkpoint")
        assert not marker.exists()


def test_hostile_checkpoint_is_refused_by_the_cli(tmp_path):
    marker = tmp_path / "pwned"
    run_dir = write_run_dir(tmp_path / "run", {"format": ckpt.FORMAT, "x": PAYLOADS["os.system"](marker)})
    assert_refused(cli("export", str(run_dir), cwd=tmp_path), marker, "pickled", "--trust-checkpoint")
    assert_refused(cli("run", "--resume", str(run_dir), cwd=tmp_path), marker, "pickled", "--trust-checkpoint")


def test_run_dir_naming_an_untrusted_model_factory_is_refused(tmp_path):
    """A safe-format checkpoint (export) or config.yaml (resume) that names os:system as the model."""
    marker = tmp_path / "pwned"
    spec = {"name": "os:system", "command": f"touch {marker}", "num_classes": 10, "in_channels": 1, "input_size": 8}
    config = {**CONFIG, "model": {"name": "os:system", "kwargs": {"command": f"touch {marker}"}}}
    run_dir = write_run_dir(tmp_path / "run", {"format": ckpt.FORMAT, "epoch": 1, "model_spec": spec}, config)
    for call in (lambda: pk.run(resume=str(run_dir)), lambda: export_run(str(run_dir))):
        with pytest.raises(ValueError) as err:
            call()
        assert_one_line(err, "'os:system'", "not trusted", "--trust-checkpoint")
    assert_refused(cli("export", str(run_dir), cwd=tmp_path), marker, "'os:system'", "not trusted")
    assert_refused(cli("run", "--resume", str(run_dir), cwd=tmp_path), marker, "'os:system'", "not trusted")


@pytest.fixture(scope="module")
def old_format_run(tmp_path_factory):
    """A real run whose checkpoint is rewritten the way the first format stored it (benign pickled RNG
    objects: a numpy array and Python tuples), and whose config asks for one more epoch (so a resume trains)."""
    out = tmp_path_factory.mktemp("runs")
    run_cfg = {**CONFIG["run"], "out": str(out), "name": "old"}
    res = pk.run({**CONFIG, "run": run_cfg})
    more = {**CONFIG, "train": {**CONFIG["train"], "epochs": 2}, "run": run_cfg}
    pathlib.Path(res.run_dir, "config.yaml").write_text(from_dict(more).to_yaml())
    path = os.path.join(res.run_dir, ckpt.CHECKPOINT)
    blob = torch.load(path, weights_only=True)
    blob["format"] = "prunekit-checkpoint/1"
    blob["rng"]["numpy"] = np.random.get_state()
    blob["rng"]["python"] = random.getstate()
    torch.save(blob, path)
    return pathlib.Path(res.run_dir)


def test_old_format_checkpoint_needs_trust(old_format_run, tmp_path):
    run_dir = old_format_run
    with pytest.raises(ValueError) as err:
        export_run(str(run_dir), str(tmp_path / "api.pt"))
    assert_one_line(err, "older prunekit", "--trust-checkpoint")
    assert export_run(str(run_dir), str(tmp_path / "api.pt"), trust_checkpoint=True)["plan"]

    r = cli("export", str(run_dir), "--out", str(tmp_path / "b.pt"), "--trust-checkpoint", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pk.load_pruned(str(tmp_path / "b.pt"))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    refused = cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert_refused(refused, tmp_path / "no-side-effect", "older prunekit", "--trust-checkpoint")
    r = cli("run", "--resume", str(run_dir), "--trust-checkpoint", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # the resumed run trained its second epoch and wrote a new-format checkpoint, which loads without trust
    assert torch.load(run_dir / ckpt.CHECKPOINT, weights_only=True)["format"] == ckpt.FORMAT
    assert export_run(str(run_dir), str(tmp_path / "c.pt"))["plan"]


def test_rng_states_round_trip_through_weights_only(tmp_path):
    torch.save(ckpt.rng_state(), tmp_path / "rng.pt")
    before = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(before[0], again[0]) and np.array_equal(before[1], again[1]) and before[2] == again[2]
