"""What a run writes and prints (issue 12, items 9-11, 13-15): the results table at 80 columns, file modes under
the user's umask, the input normalization in result.json / the export / LOAD.md, progress lines in plain mode,
robust latency timing, and the small items (compare duplicates, the resolved config.yaml, `list keys`, the
graph's input shape, "1 epoch", TorchScript without warnings, `--model pkg:factory` from the current folder).
CLI behaviour goes through the real entry point in a subprocess."""

import json
import logging
import os
import stat
import subprocess
import sys

import pytest
import torch
import yaml
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "2", "--progress", "plain"]
UMASK = 0o027  # differs from both mkstemp's 0600 and the usual 0644


def pk(*args, cwd=ROOT, env=None, umask=-1, exe=(sys.executable, "-m", "prunekit")):
    e = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([*exe, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=600, umask=umask)


@pytest.fixture(scope="module")
def run80(tmp_path_factory):
    """One chex run at COLUMNS=80 and umask 027, a progress line at every step, then its export."""
    out = tmp_path_factory.mktemp("runs")
    r = pk(
        "run", "--strategy", "chex", *QUICK, "--out", str(out), "--name", "r1",
        "--set", "run.log_seconds=0.000001", "--set", "run.latency_runs=3",
        env={"COLUMNS": "80"}, umask=UMASK,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    x = pk("export", str(out / "r1"), "--torchscript", umask=UMASK)
    assert x.returncode == 0, x.stderr[-3000:]
    return out / "r1", r, x


def fake_result(folder, **kw):
    """A run directory holding only a result.json (what `prunekit report` reads)."""
    from prunekit.results import RunResult

    base = dict(
        dataset="digits", model="small_cnn", seed=0, epochs=2, device="cpu", top1=90.0, params=1234, macs=5678,
        dense_params=4321, dense_macs=8765, macs_reduction=0.35, latency_ms=1.0, dense_latency_ms=2.0, speedup=2.0,
        latency_batch=32, train_seconds=12.5, event_seconds=0.25,
    )  # fmt: skip
    base.update(kw)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(RunResult(**base).to_dict()))
    return folder


# ---------------------------------------------------------------------------------------- 9: 80 columns


def test_run_table_fits_80_columns_and_names_what_it_left_out(run80):
    run_dir, r, _ = run80
    lines = r.stdout.splitlines()
    assert "top-1" in r.stdout and "speedup" in r.stdout
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "not shown at 80 columns" in r.stdout and "result.json" in r.stdout
    res = json.loads((run_dir / "result.json").read_text())
    assert res["train_seconds"] > 0 and res["params"] > 0  # what the narrow table leaves out is in the file


def test_report_fits_80_columns_with_a_failed_row_and_keeps_every_column_in_the_files(tmp_path):
    a = fake_result(tmp_path / "cmp" / "chex", strategy="chex")
    fake_result(
        tmp_path / "cmp" / "bad", strategy="my_pkg.strategies:very_long_strategy", status="failed",
        error="ValueError: the strategy returned a tensor of the wrong shape for group layer1.0.conv1",
    )  # fmt: skip
    r = pk("report", str(tmp_path / "cmp"), "--no-plots", env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("\nwrote ")[0].splitlines()  # the paths written come after the table
    assert max(len(line) for line in table) <= 80, r.stdout
    body = [line.split("│")[1:-1] for line in table if line.startswith("│")]
    assert "".join(cells[0].strip() for cells in body).startswith("my_pkg.strategies:very_long_strategychex")
    assert "wrong shape for group layer1.0.conv1" in " ".join(cells[-1].strip() for cells in body)
    assert all(cells[1].strip() in ("90.00", "") for cells in body)  # numbers never fold
    assert "not shown at 80 columns" in r.stdout
    head = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()[0].split(",")
    assert {"params", "train_seconds", "event_seconds", "latency_ms", "macs"} <= set(head)
    wide = pk("report", str(a), "--no-plots", "--out", str(tmp_path / "w"), env={"COLUMNS": "200"})
    assert "train s" in wide.stdout and "prune s" in wide.stdout and "not shown" not in wide.stdout


def test_latency_budget_columns_fit_80_columns_without_folding_numbers():
    from rich.console import Console

    from prunekit.report import rich_table
    from prunekit.results import RunResult

    base = dict(dataset="digits", model="resnet20", epochs=1, seed=0, top1=97.5, dense_top1=98.0, params=123456,
                macs=1234567, macs_reduction=0.5, latency_ms=1.23, speedup=1.8, train_seconds=30.0,
                event_seconds=1.0, status="ok")  # fmt: skip
    results = [
        RunResult(strategy="magnitude", **base, latency_target=0.6, latency_target_ms=6.0, latency_achieved=0.62,
                  latency_achieved_ms=6.2, latency_budget_batch=32),  # fmt: skip
        RunResult(strategy="my_pkg.strategies:long_name", **base),
    ]
    console = Console(width=80, record=True)
    console.print(rich_table(results, width=80, full_in="result.json"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    # the achieved latency (with its distance to the target) and the numbers stay whole on one line
    assert "6.20 (0.62x, +3.3%)" in text and "97.50" in text and "-0.50" in text, text
    assert "strategy" in text and "latency target ms" in text.split("not shown")[1], text


# ---------------------------------------------------------------------------------------- 10: umask


def test_run_and_export_files_follow_the_umask(run80):
    run_dir, _, _ = run80
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "metrics.csv", "result.json", "checkpoint.pt", "model_pruned.pt", "run.log"} <= names
    assert {"exploration.png", "LOAD.md", "model_pruned.torchscript.pt"} <= names
    wrong = {str(p.relative_to(run_dir)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    wrong = {k: v for k, v in wrong.items() if v != oct(0o666 & ~UMASK)}
    assert not wrong, wrong
    for d in [run_dir, *(p for p in run_dir.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~UMASK, d


# ---------------------------------------------------------------------------------------- 11: input spec


def test_input_normalization_is_recorded_and_feeds_the_exported_model_correctly(run80):
    run_dir, _, x = run80
    from prunekit.config import DataConfig
    from prunekit.data import build_data

    res = json.loads((run_dir / "result.json").read_text())
    spec = res["input"]
    assert spec["shape"] == [1, 8, 8] and spec["in_channels"] == 1 and spec["input_size"] == 8
    assert len(spec["mean"]) == 1 and len(spec["std"]) == 1 and spec["std"][0] > 0
    plan = run_dir / "export" / "model_pruned.pt"
    assert torch.load(plan, weights_only=True)["input"] == spec
    assert torch.load(run_dir / "model_pruned.pt", weights_only=True)["input"] == spec
    load_md = (run_dir / "export" / "LOAD.md").read_text()
    assert str(spec["mean"]) in load_md and str(spec["std"]) in load_md and "x = (images - mean) / std" in load_md
    # the recorded recipe reproduces the run's test accuracy: scaled digits in, normalized as the spec says
    import prunekit

    model = prunekit.load_pruned(str(plan))
    test = build_data(DataConfig()).test
    images = test.images.float()  # the digits are stored scaled to 0..1 ("value / 16")
    xin = (images - torch.tensor(spec["mean"]).view(1, -1, 1, 1)) / torch.tensor(spec["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        top1 = 100.0 * float((model(xin).argmax(1) == test.labels).float().mean())
    assert abs(top1 - res["top1"]) < 0.5, (top1, res["top1"])


# ---------------------------------------------------------------------------------------- 13: progress


def test_plain_mode_logs_progress_within_an_epoch(run80):
    _, r, _ = run80
    mid = [line for line in r.stderr.splitlines() if "epoch 1/2: batch " in line]
    assert mid, r.stderr[-2000:]
    assert "loss " in mid[0] and "left" in mid[0]


def test_progress_lines_are_spaced_by_the_interval(caplog):
    from prunekit.runlog import Progress

    now = [0.0]
    p = Progress(False, plain_seconds=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="prunekit"):
        p.epoch("epoch 1/3", 100, 0)
        for _ in range(99):
            now[0] += 1.0  # one second per batch
            p.advance("loss 0.5")
    lines = [rec.getMessage() for rec in caplog.records]
    assert [line.split(": batch ")[1].split(" ")[0] for line in lines] == [f"{k}/100" for k in range(10, 100, 10)]
    assert lines[0] == "epoch 1/3: batch 10/100 (10%), loss 0.5, 10s, about 1m30s left"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="prunekit"):
        off = Progress(False, plain_seconds=0.0, clock=lambda: now[0])
        off.epoch("epoch 1/3", 100, 0)
        for _ in range(99):
            now[0] += 100.0
            off.advance("loss 0.5")
    assert not caplog.records


# ---------------------------------------------------------------------------------------- 14: latency


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Costly(nn.Module):
    """A model whose forward pass advances a fake clock by ``cost(call)`` milliseconds."""

    def __init__(self, clock, name, cost, calls_log):
        super().__init__()
        self.clock, self.name, self.cost, self.calls_log = clock, name, cost, calls_log

    def forward(self, x):
        self.calls_log.append(self.name)
        self.clock.now += self.cost(len(self.calls_log)) / 1000.0
        return x


def _env():
    from prunekit.env import Env

    return Env(torch.device("cpu"))


def test_latency_medians_skip_warmup_and_survive_a_load_burst():
    from prunekit.latency import time_models

    clock, log = FakeClock(), []

    def slow_start_and_burst(base):  # first calls slow (warm-up), calls 30-40 hit by a load burst
        return lambda n: base * (50 if n <= 6 else 10 if 30 <= n < 40 else 1)

    a = Costly(clock, "a", slow_start_and_burst(2.0), log)
    b = Costly(clock, "b", slow_start_and_burst(1.0), log)
    stats = time_models([a, b], torch.zeros(1), _env(), runs=40, warmup=3, clock=clock)
    assert stats.rounds == 40 and stats.warmup == 3 and stats.calls == 1
    assert stats.ms == pytest.approx([2.0, 1.0], rel=1e-9)
    assert max(stats.samples[1]) == pytest.approx(10.0) and min(stats.samples[1]) == pytest.approx(1.0)  # no warm-up
    assert stats.ratio(0, 1) == pytest.approx(2.0, rel=1e-9)
    assert "median of 40 interleaved rounds after 3 warm-up" == stats.describe()


def test_latency_rounds_alternate_the_order():
    from prunekit.latency import round_order, time_models

    clock, log = FakeClock(), []
    models = [Costly(clock, n, lambda _: 1.0, log) for n in "ab"]
    time_models(models, torch.zeros(1), _env(), runs=6, warmup=2, clock=clock)
    rounds = [tuple(log[i : i + 2]) for i in range(0, len(log), 2)]
    assert rounds == [("a", "b"), ("b", "a")] * 4  # 2 warm-up + 6 timed rounds
    firsts = [round_order(3, i)[0] for i in range(6)]
    assert set(firsts) == {0, 1, 2}  # with three models each one leads some rounds


def test_latency_times_for_at_least_min_seconds_and_batches_tiny_calls():
    from prunekit.latency import measure_latency, time_models

    clock, log = FakeClock(), []
    models = [Costly(clock, n, lambda _: 1.0, log) for n in "ab"]
    stats = time_models(models, torch.zeros(1), _env(), runs=5, warmup=1, min_seconds=0.1, clock=clock)
    assert 50 <= stats.rounds <= 51  # 2 ms per round until 0.1 s have passed
    tiny = [Costly(clock, n, lambda _, c=c: c, []) for n, c in (("a", 0.1), ("b", 0.05))]
    stats = time_models(tiny, torch.zeros(1), _env(), runs=4, warmup=1, clock=clock)
    assert stats.calls == 20  # a sample of the fastest model lasts >= 1 ms
    assert stats.ms == pytest.approx([0.1, 0.05], rel=1e-6)
    assert "20 calls per sample" in stats.describe()
    real = measure_latency([nn.Conv2d(3, 8, 3), nn.Conv2d(3, 4, 3)], torch.zeros(2, 3, 16, 16), _env(), runs=3)
    assert len(real) == 2 and all(v > 0 for v in real)


def test_cpu_time_on_one_cpu_thread_else_the_wall_clock():
    import time

    from prunekit.env import Env
    from prunekit.latency import cpu_clock

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu_clock(_env()) == (time.thread_time, "thread CPU time")
        assert cpu_clock(Env(torch.device("cuda", 0)))[0] is time.perf_counter
        torch.set_num_threads(2)
        assert cpu_clock(_env()) == (time.perf_counter, "wall clock")
    finally:
        torch.set_num_threads(threads)


def test_run_footer_says_how_latency_was_measured(run80):
    run_dir, r, _ = run80
    res = json.loads((run_dir / "result.json").read_text())
    assert res["latency_method"].startswith("median of ") and "interleaved rounds" in res["latency_method"]
    assert res["latency_method"].endswith("(thread CPU time)")  # a small model trains on one CPU thread
    flat = " ".join(r.stdout.split())
    assert "interleaved rounds" in flat and "speedup: median of the per-round dense/pruned ratios" in flat


# ---------------------------------------------------------------------------------------- 15: small items


def test_compare_refuses_a_strategy_named_twice(tmp_path):
    for names, said in (("chex,chex", "'chex' is named twice"), ("none,dense", "'none' and 'dense' are the same")):
        r = pk("compare", "--strategies", names, *QUICK, "--out", str(tmp_path / "out"))
        assert r.returncode == 2, r.stderr
        assert said in r.stderr and "give each strategy once" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "out").exists()


def test_config_yaml_holds_resolved_values(run80):
    run_dir, _, _ = run80
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["device"] == "cpu" and cfg["train"]["amp"] == "off"
    # channels_last resolves to on (CPU too: results/train_throughput.md); one thread for a small model on CPU
    assert cfg["train"]["channels_last"] is True and cfg["train"]["threads"] == 1
    assert cfg["data"]["image_size"] == 8 and cfg["prune"]["sparsity"] == 0.5
    assert cfg["prune"]["latency_batch"] == cfg["run"]["latency_batch"] and cfg["run"]["name"] == "r1"
    assert "auto" not in (run_dir / "config.yaml").read_text()
    from prunekit.config import load_config

    load_config(str(run_dir / "config.yaml"))  # and it is a valid config to run again


def test_list_keys_shows_defaults_and_descriptions():
    from prunekit.config import KEY_HELP, all_keys

    assert set(KEY_HELP) == set(all_keys())
    r = pk("list", "keys")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(all_keys())
    lr = next(line for line in lines if line.startswith("train.lr "))
    assert lr.split()[:3] == ["train.lr", "=", "0.1"] and "learning rate" in lr
    assert any(line.startswith("run.progress = auto ") for line in lines)


def test_graph_prints_the_input_shape_it_used():
    r = pk("graph", "--model", "small_cnn", "--dataset", "cifar10")
    assert r.returncode == 0, r.stderr
    assert "input shape [1, 3, 32, 32]" in r.stdout and "dataset cifar10" in r.stdout
    r = pk("graph", "--model", "small_cnn", "--input-shape", "3,16,20", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert "input shape [1, 3, 16, 20]" in r.stderr and "--input-shape" in r.stderr
    json.loads(r.stdout)  # stdout stays pure JSON


def test_one_epoch_is_singular(tmp_path):
    fake_result(tmp_path / "one", strategy="chex", epochs=1)
    r = pk("report", str(tmp_path / "one"), "--no-plots", "--out", str(tmp_path / "rep"), env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "1 epoch," in r.stdout and "1 epochs" not in r.stdout


def test_torchscript_export_prints_no_torch_warnings(run80):
    _, _, x = run80
    assert "torchscript:" in x.stdout
    assert "Warning" not in x.stderr, x.stderr


def test_model_factory_package_in_the_current_folder(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "prunekit")
    if not os.path.exists(exe):
        pytest.skip("no prunekit console script beside this interpreter")
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes=10, in_channels=3, input_size=8):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
    )
    env = {"PYTHONPATH": ""}  # only the current folder can provide mynets
    r = pk("graph", "--model", "mynets.nets:tiny", "--input-shape", "3,8,8", cwd=tmp_path, env=env, exe=(exe,))
    assert r.returncode == 0, r.stderr
    assert "1 prunable groups" in r.stdout


def test_unknown_key_message_has_no_stray_space():
    from prunekit.config import ConfigError, from_dict

    with pytest.raises(ConfigError) as e:
        from_dict({"train": {"lrr": 1}})
    assert str(e.value) == "unknown config key 'train.lrr'; did you mean 'train.lr'?"
