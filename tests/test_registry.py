"""The strategy registry: built-ins found through entry points, the decorator, duplicates, unknown names
with suggestions, broken plugins reported by name without breaking the others, listings."""

import importlib.metadata as md
import warnings

import pytest
import torch
from conftest_strategies import registry_sandbox

import prunekit as pk
from prunekit import registry
from prunekit.registry import DuplicateStrategyError, StrategyNotFoundError
from prunekit.strategy import Param, ParamError, Strategy, top_k_mask


class Keep(Strategy):
    """Keep the first channels."""

    params = {"offset": Param(int, 0, min=0, help="unused")}

    def prune(self, state, group, keep):
        return top_k_mask(-torch.arange(group.size).float(), keep)


@pytest.fixture(autouse=True)
def sandbox():
    with registry_sandbox():
        yield


def test_builtins_come_from_entry_points():
    infos = pk.list_strategies()
    assert {"chex", "magnitude", "random"} <= set(infos)
    assert list(infos) == sorted(infos)
    for name in ("chex", "magnitude", "random"):
        assert infos[name].source.startswith("entry point"), infos[name].source
    assert type(pk.get_strategy("chex")).__name__ == "CHEX"
    assert type(pk.get_strategy("random")).__name__ == "RandomStrategy"
    chex = infos["chex"]
    assert "CHEX" in chex.description and "\n" not in chex.description
    assert chex.defaults["delta_0"] == 0.3 and chex.params["delta_T"].default == 2.0
    assert "delta_0 = 0.3" in chex.summary() and chex.summary(params=False).startswith("chex: ")
    assert "none (dense), chex" in ", ".join(["none (dense)", *pk.list_strategies()])  # what `prunekit list` prints
    assert registry.failed_plugins() == {}
    # the core never imports a strategy module by name
    import pathlib

    core = pathlib.Path(registry.__file__).parent
    core_files = ["registry.py", "strategy.py", "controller.py", "__init__.py", "harness.py", "trainer.py"]
    for f in [*core_files, "comparison.py"]:
        text = (core / f).read_text()
        assert "strategies.chex" not in text and "strategies import" not in text, f


def test_decorator_duplicates_and_force():
    pk.register_strategy("keep_first")(Keep)
    assert isinstance(pk.get_strategy("keep_first", offset=2), Keep)
    assert pk.list_strategies()["keep_first"].source == f"decorator in {__name__}"
    pk.register_strategy("keep_first")(Keep)  # the same class again: fine

    class Other(Keep):
        """Another one."""

    with pytest.raises(DuplicateStrategyError, match="'keep_first' is already registered.*force=True"):
        pk.register_strategy("keep_first")(Other)
    with pytest.raises(DuplicateStrategyError, match="'chex' is already registered"):
        pk.register_strategy("chex")(Other)
    pk.register_strategy("keep_first", force=True)(Other)
    assert type(pk.get_strategy("keep_first")) is Other
    registry.unregister_strategy("keep_first")
    assert "keep_first" not in pk.list_strategies()


def test_decorator_rejects_bad_input():
    with pytest.raises(TypeError, match="subclass of prunekit.Strategy"):
        pk.register_strategy("fn")(lambda: None)
    with pytest.raises(TypeError, match="abstract: implement prune"):
        pk.register_strategy("abstract")(type("Abstract", (Strategy,), {}))
    for bad in ("", " x", "none", "dense", 3):
        with pytest.raises(ValueError):
            pk.register_strategy(bad)


def test_unknown_name_lists_and_suggests():
    with pytest.raises(StrategyNotFoundError) as e:
        pk.get_strategy("chexx")
    msg = str(e.value)
    assert "unknown strategy 'chexx'; did you mean 'chex'?" in msg
    assert "chex, magnitude, random" in msg
    assert isinstance(e.value, KeyError)
    with pytest.raises(StrategyNotFoundError, match="Registered strategies"):
        pk.get_strategy("zzzz")


def test_param_errors_through_get_strategy():
    with pytest.raises(ParamError, match="strategy 'chex': parameter 'delta_0' must be < 1, got 1.5"):
        pk.get_strategy("chex", delta_0=1.5)
    with pytest.raises(ParamError, match="strategy 'magnitude' has no parameter 'nrom'; did you mean 'norm'"):
        pk.get_strategy("magnitude", nrom="l2")


def test_broken_plugin_is_reported_and_others_still_load(monkeypatch):
    real = registry._entry_points()
    broken = md.EntryPoint(name="broken", value="no_such_module_for_prunekit:Thing", group=registry.ENTRY_POINT_GROUP)
    not_a_strategy = md.EntryPoint(name="notone", value="collections:OrderedDict", group=registry.ENTRY_POINT_GROUP)
    clash = md.EntryPoint(
        name="chex", value="prunekit.strategies.random:RandomStrategy", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(registry, "_entry_points", lambda: [broken, *real, not_a_strategy, clash])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.discover(refresh=True)
    failed = registry.failed_plugins()
    assert set(failed) == {"broken", "notone", "chex"}
    assert "'chex' is already registered" in failed["chex"]  # a second plugin cannot take a used name
    assert "cannot import 'no_such_module_for_prunekit:Thing'" in failed["broken"]
    assert "ModuleNotFoundError" in failed["broken"]
    assert "subclass of prunekit.Strategy" in failed["notone"]
    assert any("'broken' was not loaded" in str(w.message) for w in caught)
    assert {"chex", "magnitude", "random"} <= set(pk.list_strategies())  # the others are fine
    assert type(pk.get_strategy("chex")).__name__ == "CHEX"  # the first registration wins
    with pytest.raises(StrategyNotFoundError, match="A plugin named 'broken' failed to load"):
        pk.get_strategy("broken")
