"""Latency budgets (prune.latency / Budget(latency=F)): the solver, the controller's use of it (timed only at
the first and last events, round_to=auto, resume), the result table, and the errors. Timing-independent: a
fake timer gives each slimmed model a latency that is a known function of its MACs and channel widths. The
real timer is exercised through the CLI, without asserting how close it lands (that is a measurement:
docs/results/latency_budget.md)."""

import copy
import json
import os

import pytest
import torch
from cli_helpers import run_prunekit
from conftest_strategies import one_thread  # noqa: F401  (fixture)
from torch import nn

import prunekit as pk
from prunekit.config import ConfigError, load_config
from prunekit.controller import PruningController
from prunekit.env import Env
from prunekit.latency_budget import (
    LATENCY_TOLERANCE,
    LatencyBudgetError,
    LatencyTimer,
    Probe,
    rank_round_to,
    solve_latency,
    timed,
)
from prunekit.models import build_model
from prunekit.report import markdown
from prunekit.results import RunResult

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X1 = torch.zeros(1, 1, 8, 8)


# ------------------------------------------------------------------------------------------------ the solver


def affine_probe(overhead, step=1 / 200, calls=None):
    """A candidate at MACs fraction m (widths quantize it to ``step``) whose latency ratio is
    overhead + (1 - overhead) * m."""

    def probe(m):
        if calls is not None:
            calls.append(m)
        q = round(m / step) * step
        return Probe(q, overhead + (1 - overhead) * q, 10 * (overhead + (1 - overhead) * q), 10.0, 1)

    return probe


@pytest.mark.parametrize("overhead,target", [(0.3, 0.6), (0.0, 0.5), (0.5, 0.7), (0.1, 0.2)])
def test_solver_lands_within_tolerance_in_few_probes(overhead, target):
    calls = []
    best, probes = solve_latency(affine_probe(overhead, calls=calls), target, floor=0.01)
    assert abs(best.ratio - target) <= LATENCY_TOLERANCE * target, best
    assert len(calls) <= 3  # a secant through the dense point finds a straight line at once
    assert best in probes


def test_solver_brackets_a_curved_noisy_latency():
    def probe(m):
        q = round(m * 100) / 100
        wobble = 0.02 * (1 if int(q * 100) % 2 else -1)  # +-2% that a secant must not chase forever
        r = (0.15 + 0.85 * q**0.5) * (1 + wobble)
        return Probe(q, r, r, 1.0, 1)

    best, probes = solve_latency(probe, 0.55, floor=0.01)
    assert abs(best.ratio - 0.55) <= LATENCY_TOLERANCE * 0.55
    assert len(probes) <= 7


def test_solver_says_what_is_reachable():
    with pytest.raises(LatencyBudgetError, match=r"measures 0\.525 of it .*ask for latency >= 0\.55"):
        solve_latency(affine_probe(0.5), 0.3, floor=0.05)
    # a target within the tolerance of the floor is met at the floor, not refused
    best, _ = solve_latency(affine_probe(0.5), 0.51, floor=0.05)
    assert best.macs == pytest.approx(0.05)


def test_rank_round_to_compares_at_the_same_macs():
    # round_to 8 lands on fewer MACs: its lower ratio is only the slope's doing, so 1 stays first
    same = {1: Probe(0.40, 0.60, 6, 10, 1), 8: Probe(0.38, 0.59, 5.9, 10, 8)}
    assert rank_round_to(same, slope=0.5, at=0.40) == [1, 8]
    faster = {1: Probe(0.40, 0.60, 6, 10, 1), 8: Probe(0.42, 0.50, 5, 10, 8), 16: Probe(0.43, 0.52, 5.2, 10, 16)}
    assert rank_round_to(faster, slope=0.5, at=0.40) == [8, 16, 1]
    # round_to 32 cannot land near 0.4 of the MACs (narrow groups stay whole): out, however fast it looks
    far = {1: Probe(0.40, 0.60, 6, 10, 1), 32: Probe(0.77, 0.55, 5.5, 10, 32)}
    assert rank_round_to(far, slope=0.5, at=0.40) == [1]


def test_timed_reads_stats_and_plain_lists():
    assert timed([10.0, 6.0]) == ([10.0, 6.0], [1.0, 0.6])
    with pytest.raises(LatencyBudgetError, match="positive time"):
        timed([0.0, 1.0])


# ------------------------------------------------------------------------------------------------ the controller


def digits_resnet():
    net = build_model("resnet20", num_classes=10, in_channels=1, input_size=8)
    return net, pk.build_graph(net, X1)


class FakeTimer:
    """Latency of a model: a fixed overhead plus its MACs, plus ``penalty`` for every conv whose width is not
    a multiple of 8 (what vectorized kernels do). Records the calls per controller step."""

    def __init__(self, dense_macs, overhead=0.25, penalty=0.0):
        self.dense, self.overhead, self.penalty = dense_macs, overhead, penalty
        self.calls = []
        self.step = None

    def latency(self, model):
        odd = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels % 8)
        return 10 * (self.overhead + (1 - self.overhead) * pk.count_macs(model, X1) / self.dense + self.penalty * odd)

    def __call__(self, models):
        self.calls.append(self.step)
        return [self.latency(m) for m in models]


def fake_ratio(timer, net, graph, keep):
    return timer.latency(pk.slim(net, graph, keep)) / timer.latency(net)


@pytest.mark.parametrize("strategy,params", [("magnitude", {}), ("random", {}), ("chex", {"delta_T": 1, "T_max": 2})])
def test_slimmed_model_meets_the_target(strategy, params):
    net, graph = digits_resnet()
    timer = FakeTimer(pk.count_macs(net, X1))
    ctrl = PruningController(
        net, graph, pk.get_strategy(strategy, **params), pk.Budget(latency=0.6), 1, 3, latency_timer=timer
    )
    ctrl.start(None)
    for _ in range(3):
        ctrl.after_optimizer_step()
    ratio = fake_ratio(timer, net, graph, ctrl.keep)
    assert abs(ratio - 0.6) <= LATENCY_TOLERANCE * 0.6, ratio
    lat = ctrl.events[-1]["latency"] if strategy != "chex" else ctrl.events[0]["latency"]
    assert lat["target"] == 0.6 and abs(lat["ratio"] - 0.6) <= LATENCY_TOLERANCE * 0.6
    assert 0 < lat["macs"] < 0.6  # the fixed overhead: fewer MACs than the latency fraction


def test_timed_only_at_the_first_and_last_event():
    net, graph = digits_resnet()
    timer = FakeTimer(pk.count_macs(net, X1))
    strategy = pk.get_strategy("magnitude", at=0.0, end=0.5, events=4)  # gradual: 4 events over 8 steps
    ctrl = PruningController(net, graph, strategy, pk.Budget(latency=0.5), 4, 2, latency_timer=timer)
    steps = ctrl.schedule.steps
    assert len(steps) == 4
    ctrl.start(None)
    for s in range(1, 9):
        timer.step = s
        ctrl.after_optimizer_step()
    timed_at = sorted(set(timer.calls))
    assert timed_at == [steps[0], steps[-1]], (timed_at, steps)
    ratio = fake_ratio(timer, net, graph, ctrl.keep)
    assert abs(ratio - 0.5) <= LATENCY_TOLERANCE * 0.5, ratio


@pytest.mark.parametrize("penalty,expected", [(0.005, 8), (0.0, 1)])
def test_round_to_auto_keeps_the_fastest_rounding(penalty, expected):
    net, graph = digits_resnet()
    timer = FakeTimer(pk.count_macs(net, X1), penalty=penalty)
    budget = pk.Budget(latency=0.6, round_to="auto")
    ctrl = PruningController(net, graph, pk.get_strategy("magnitude"), budget, 1, 1, latency_timer=timer)
    ctrl.start(None)
    assert ctrl.round_to == expected
    ev = ctrl.events[0]
    assert ev["round_to"] == expected and set(ev["latency"]["round_to_candidates"]) >= {1, 8}
    assert all(k % expected == 0 or k == graph[g].size for g, k in ev["kept"].items())
    assert abs(fake_ratio(timer, net, graph, ctrl.keep) - 0.6) <= LATENCY_TOLERANCE * 0.6


def test_resume_keeps_the_rounding_and_the_calibration():
    net, graph = digits_resnet()
    timer = FakeTimer(pk.count_macs(net, X1), penalty=0.005)
    strategy = pk.get_strategy("magnitude", at=0.0, end=0.5, events=4)
    budget = pk.Budget(latency=0.5, round_to="auto")
    a = PruningController(copy.deepcopy(net), graph, strategy, budget, 4, 2, latency_timer=timer)
    a.start(None)
    while not a.events:  # gradual pruning: the first event is after the first step
        a.after_optimizer_step()
    sd = a.state_dict()
    timer.calls.clear()
    b = PruningController(copy.deepcopy(net), graph, pk.get_strategy("magnitude", at=0.0, end=0.5, events=4),
                          budget, 4, 2, latency_timer=timer)  # fmt: skip
    b.start(None)  # as the trainer does: start, then the checkpoint's state
    b.load_state_dict(sd)
    assert b.round_to == a.round_to == 8 and b.latency == a.latency
    while b.step + 1 < b.schedule.steps[1]:
        b.after_optimizer_step()
    b.after_optimizer_step()  # an intermediate event: the calibration is reused, nothing is timed
    assert timer.calls == [] and len(b.events) == 2
    assert b.events[-1]["round_to"] == 8


def test_a_latency_budget_out_of_reach_is_one_clear_error():
    net, graph = digits_resnet()
    timer = FakeTimer(pk.count_macs(net, X1), overhead=0.5)
    budget = pk.Budget(latency=0.2)
    ctrl = PruningController(net, graph, pk.get_strategy("magnitude"), budget, 1, 1, latency_timer=timer)
    with pytest.raises(LatencyBudgetError, match=r"ask for latency >= 0\.5"):
        ctrl.start(None)


def test_budget_and_controller_errors():
    for bad in (0, 1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="latency"):
            pk.Budget(latency=bad)
    with pytest.raises(ValueError, match="exactly one of"):
        pk.Budget(latency=0.5, macs=0.5)
    with pytest.raises(ValueError, match="needs a latency budget"):
        pk.Budget(sparsity=0.5, round_to="auto")
    with pytest.raises(ValueError, match="integer >= 1"):
        pk.Budget(latency=0.5, round_to="fast")
    net, graph = digits_resnet()
    with pytest.raises(ValueError, match="needs latency_timer"):
        PruningController(net, graph, pk.get_strategy("magnitude"), pk.Budget(latency=0.5), 1, 1)
    with pytest.raises(LatencyBudgetError, match="cannot time device 'meta'"):
        LatencyTimer(Env(torch.device("meta")), torch.zeros(1, 1, 8, 8))


def test_config_keys_and_errors():
    cfg = load_config(sets=["prune.latency=0.6", "prune.latency_batch=8", "prune.round_to=auto"])
    assert cfg.budget_kwargs() == {"latency": 0.6, "round_to": "auto"}
    assert load_config(sets=["prune.latency=0.6"]).prune.sparsity is None
    later = load_config(flags={"prune.latency": 0.6}, sets=["prune.macs=0.5"])  # a later layer switches kind
    assert later.budget_kwargs()["macs"] == 0.5 and later.prune.latency is None
    for sets, match in (
        (["prune.latency=0.6", "prune.macs=0.5"], "prune.macs and prune.latency are both set"),
        (["prune.latency=1.2"], "strictly between 0 and 1"),
        (["prune.round_to=auto"], "needs a latency budget"),
        (["prune.round_to=fast", "prune.latency=0.5"], "integer >= 1 or 'auto'"),
        (["prune.latency=0.5", "prune.latency_batch=0"], "prune.latency_batch"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config(sets=sets)


def test_latency_batch_flag_sets_the_config_key():
    from prunekit.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--latency", "0.6", "--latency-batch", "256"])
    cfg = config_from_args(args)
    assert (cfg.prune.latency, cfg.prune.latency_batch, cfg.run.latency_batch) == (0.6, 256, 32)
    assert config_from_args(build_parser().parse_args(["run", "--latency", "0.6"])).prune.latency_batch is None


def test_result_table_shows_target_and_achieved():
    base = {"strategy": "magnitude", "dataset": "digits", "model": "resnet20", "epochs": 1, "seed": 0}
    plain = markdown([RunResult(**base)])
    assert "latency target" not in plain
    res = RunResult(**base, latency_target=0.6, latency_target_ms=6.0, latency_achieved=0.62,
                    latency_achieved_ms=6.2, latency_budget_batch=32)  # fmt: skip
    md = markdown([res, RunResult(**{**base, "strategy": "random"})])
    assert "| latency target ms | achieved ms |" in md
    assert "| 6.00 (0.6x) | 6.20 (0.62x, +3.3%) |" in md
    assert "latency budget timed at batch 32" in md


# ------------------------------------------------------------------------------------------------ the CLI


def cli(*args, timeout=600):
    return run_prunekit(*args, timeout=timeout)


QUICK = ["--strategy", "magnitude", "--epochs", "1", "--progress", "plain", "--set", "data.limit_train=256",
         "--set", "run.latency_runs=3", "--set", "prune.latency_batch=64"]  # fmt: skip


@pytest.mark.parametrize(
    "args,message",
    [
        (["--latency", "0.6", "--macs", "0.5"], "prune.macs and prune.latency are both set"),
        (["--latency", "1.5"], "prune.latency must be a fraction strictly between 0 and 1"),
        (["--latency", "0"], "prune.latency must be a fraction strictly between 0 and 1"),
        (["--round-to", "auto"], "needs a latency budget"),
        (["--round-to", "fast", "--latency", "0.5"], "expected an integer or 'auto'"),
    ],
)
def test_cli_budget_errors(tmp_path, args, message):
    r = cli("run", *QUICK, *args, "--out", str(tmp_path))
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and os.listdir(tmp_path) == []


def test_cli_unreachable_latency_is_one_line_and_leaves_no_run_dir(tmp_path):
    r = cli("run", *QUICK, "--latency", "0.01", "--out", str(tmp_path))  # no model keeps 1% of its latency
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("prunekit: error")]
    assert len(err) == 1 and "the latency budget keeps 0.01 of the dense latency" in err[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and os.listdir(tmp_path) == []


def test_cli_run_with_a_latency_budget_reports_target_and_achieved(tmp_path):
    r = cli("run", *QUICK, "--latency", "0.8", "--round-to", "auto", "--out", str(tmp_path), "--name", "lat")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "target ms" in r.stdout and "achieved ms" in r.stdout  # headers may wrap at their spaces
    res = json.loads((tmp_path / "lat" / "result.json").read_text())
    assert res["latency_target"] == 0.8 and res["latency_budget_batch"] == 64
    assert res["latency_target_ms"] > 0 and res["latency_achieved"] > 0 and res["round_to"] in (1, 8, 16, 32)
    events = json.loads((tmp_path / "lat" / "events.json").read_text())
    assert events[0]["latency"]["target"] == 0.8 and events[0]["round_to"] == res["round_to"]


@pytest.mark.slow  # two processes, each timing candidates on a shared 2-core machine
def test_ddp_ranks_take_rank0_timings_and_agree(tmp_path):
    r = cli("run", *QUICK, "--latency", "0.8", "--nproc", "2", "--out", str(tmp_path), "--name", "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert res["world_size"] == 2 and res["ddp"]["masks_identical"] and res["ddp"]["events_identical"], res["ddp"]
    assert res["latency_target"] == 0.8 and res["latency_achieved"] > 0
