"""Training learns: each built-in strategy through the real harness (``pk.run``) on the embedded digits.

The other run tests check files, tables and resumption, which all look the same when the training loop
does not train (an optimizer step dropped, gradients zeroed, a learning rate of 0). Here a few epochs must
take the dense model far above chance (10%) and every strategy well above it. Measured on 2 CPU cores
(3 epochs, 50% channel sparsity): dense 97%, magnitude 96%, random 92%, chex 81%; without the optimizer
step, about 10% each.
"""

from importlib import metadata

import pytest
from conftest_strategies import one_thread  # noqa: F401  (fixture)

import prunekit as pk

pytestmark = pytest.mark.usefixtures("one_thread")  # pk.run sets torch's threads; restored after each test

BUILT_IN = ("chex", "magnitude", "random")
DENSE_MIN = 80.0  # top-1 %, dense
PRUNED_MIN = 50.0  # top-1 %, each strategy (chance: 10%)


def run(strategy: str, out) -> pk.RunResult:
    return pk.run(
        {
            "data": {"name": "digits"},
            "model": {"name": "small_cnn"},
            "train": {"epochs": 3, "threads": 1, "seed": 0},
            "prune": {"strategy": strategy},
            "run": {"out": str(out), "name": strategy, "progress": "off", "latency_runs": 1, "latency_batch": 8},
        }
    )


def test_every_built_in_strategy_is_covered():
    eps = metadata.entry_points(group="prunekit.strategies")
    declared = {ep.name for ep in eps if ep.dist is not None and ep.dist.name == "prunekit"}
    assert declared == set(BUILT_IN), "pyproject.toml's built-in strategies changed: update BUILT_IN"


def test_dense_training_learns(tmp_path):
    r = run("none", tmp_path)
    assert r.status == "ok" and r.top1 >= DENSE_MIN, f"dense top-1 {r.top1:.1f}% after 3 epochs on digits"


@pytest.mark.parametrize("strategy", BUILT_IN)
def test_strategy_learns(strategy, tmp_path):
    r = run(strategy, tmp_path)
    assert r.status == "ok" and r.num_events >= 1
    assert r.macs_reduction > 0.3, f"{strategy} did not prune (MACs reduction {r.macs_reduction})"
    assert r.top1 >= PRUNED_MIN, f"{strategy}: top-1 {r.top1:.1f}% after 3 epochs on digits (chance: 10%)"
