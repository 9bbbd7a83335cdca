"""The strategy registry: names -> Strategy classes, filled by decorators and entry points.

    @pk.register_strategy("mine")          # in your code, or
    [project.entry-points."prunekit.strategies"]
    mine = "my_pkg.pruning:Mine"           # in your package's pyproject.toml

    pk.get_strategy("chex", delta_0=0.2)   # a configured instance (parameters validated)
    pk.list_strategies()                   # {name: StrategyInfo(name, description, params)}

The core never imports a strategy by name: the built-ins (chex, magnitude, random) are declared as entry
points in prunekit's own pyproject.toml, exactly as a third-party plugin is. Entry points are loaded the
first time the registry is used; a plugin that fails to import is reported by name (a warning, and
``failed_plugins()``) and does not stop the others.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import inspect
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .strategy import Param, Strategy, describe_params

__all__ = [
    "ENTRY_POINT_GROUP",
    "StrategyInfo",
    "StrategyNotFoundError",
    "DuplicateStrategyError",
    "StrategyClassError",
    "register_strategy",
    "unregister_strategy",
    "get_strategy",
    "get_strategy_class",
    "list_strategies",
    "failed_plugins",
    "discover",
]

ENTRY_POINT_GROUP = "prunekit.strategies"

S = TypeVar("S", bound=type[Strategy])


class StrategyNotFoundError(KeyError):
    """No strategy has this name; the message lists the registered ones and the closest match."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateStrategyError(ValueError):
    """A strategy name is registered twice (pass force=True to replace it on purpose)."""


class StrategyClassError(TypeError):
    """A class registered as a strategy is not a usable Strategy (not a subclass, or abstract methods left)."""


@dataclass(frozen=True)
class StrategyInfo:
    """What ``list_strategies`` reports about one registered strategy."""

    name: str
    cls: type[Strategy]
    source: str  # "entry point <dist>" or "decorator in <module>"

    @property
    def description(self) -> str:
        return self.cls.description

    @property
    def params(self) -> dict[str, Param]:
        return dict(self.cls.params)

    @property
    def defaults(self) -> dict[str, Any]:
        return self.cls.param_defaults()

    def summary(self, params: bool = True) -> str:
        """``name: description`` and (when asked) one indented line per parameter with its default."""
        lines = [f"{self.name}: {self.description}"]
        if params:
            lines += [f"    {line}" for line in describe_params(self.cls.params)]
        return "\n".join(lines)


_registry: dict[str, StrategyInfo] = {}
_failed: dict[str, str] = {}
_from_entry_points: set[str] = set()
_discovered = False
_lock = threading.RLock()


def _check_class(cls: Any, name: str) -> None:
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise StrategyClassError(
            f"strategy {name!r} must be a subclass of prunekit.Strategy, got {cls!r}"
        )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise StrategyClassError(
            f"strategy {name!r} ({cls.__module__}.{cls.__qualname__}) is abstract: implement {missing} "
            "(see docs/custom-strategy.md)"
        )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"a strategy name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in ("none", "dense"):
        raise ValueError(f"{name!r} is reserved for dense training; choose another strategy name")
    return name


def _add(name: str, cls: type[Strategy], source: str, force: bool) -> bool:
    old = _registry.get(name)
    if old is not None and old.cls is not cls and not force:
        raise DuplicateStrategyError(
            f"strategy name {name!r} is already registered ({old.cls.__module__}.{old.cls.__qualname__}, "
            f"{old.source}); choose another name or pass force=True to replace it"
        )
    if old is not None and old.cls is cls and not force:
        return False  # the same class again (a module imported twice, a decorator plus an entry point)
    _registry[name] = StrategyInfo(name, cls, source)
    if not cls.__dict__.get("name"):
        cls.name = name
    _failed.pop(name, None)
    return True


def register_strategy(name: str, force: bool = False) -> Callable[[S], S]:
    """Class decorator: register a Strategy subclass under ``name``.

    A name that is taken by another class is a DuplicateStrategyError unless ``force=True``."""
    _check_name(name)

    def deco(cls: S) -> S:
        _check_class(cls, name)
        with _lock:
            discover()
            _add(name, cls, f"decorator in {cls.__module__}", force)
        return cls

    return deco


def unregister_strategy(name: str) -> None:
    """Remove ``name`` from the registry (tests, interactive sessions)."""
    with _lock:
        discover()
        if name not in _registry:
            raise _not_found(name)
        del _registry[name]
        _from_entry_points.discard(name)


def _entry_points() -> list[md.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        out.append(ep)
    return out


def discover(refresh: bool = False) -> None:
    """Load the ``prunekit.strategies`` entry points (once; ``refresh=True`` scans again, e.g. after a
    package was installed or added to sys.path)."""
    global _discovered
    with _lock:
        if _discovered and not refresh:
            return
        _discovered = True  # set first: a plugin module may call register_strategy while it loads
        if refresh:
            for name in list(_from_entry_points):
                _registry.pop(name, None)
            _from_entry_points.clear()
            _failed.clear()
            import importlib

            importlib.invalidate_caches()
        for ep in _entry_points():
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            try:
                obj = ep.load()
            except Exception as e:  # a broken plugin must not break the others
                _fail(ep.name, f"cannot import {ep.value!r} (from {dist}): {type(e).__name__}: {e}")
                continue
            if inspect.ismodule(obj):  # a module that registers its strategies with the decorator
                continue
            try:
                _check_class(obj, ep.name)
                if _add(ep.name, obj, f"entry point from {dist}", force=False):
                    _from_entry_points.add(ep.name)
            except (TypeError, DuplicateStrategyError) as e:
                _fail(ep.name, str(e))


def _fail(name: str, message: str) -> None:
    _failed[name] = message
    warnings.warn(f"prunekit strategy plugin {name!r} was not loaded: {message}", RuntimeWarning, stacklevel=3)


def failed_plugins() -> dict[str, str]:
    """{entry-point name: why it could not be loaded} for the plugins that failed."""
    discover()
    return dict(_failed)


def _not_found(name: str) -> StrategyNotFoundError:
    names = sorted(_registry)
    same = [n for n in names if n.lower() == str(name).lower()]  # names are case-sensitive: CHEX -> chex
    lower = {n.lower(): n for n in names}
    close = same or [lower[c] for c in difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.5)]
    msg = f"unknown strategy {name!r}" + (f"; did you mean {close[0]!r}?" if close else ".")
    msg += f" Registered strategies: {', '.join(names) if names else 'none'}"
    if name in _failed:
        msg += f". A plugin named {name!r} failed to load: {_failed[name]}"
    elif _failed:
        msg += f" (plugins that failed to load: {', '.join(sorted(_failed))})"
    return StrategyNotFoundError(msg)


def get_strategy_class(name: str) -> type[Strategy]:
    """The Strategy class registered as ``name`` (StrategyNotFoundError with suggestions otherwise)."""
    discover()
    info = _registry.get(name)
    if info is None:
        raise _not_found(name)
    return info.cls


def get_strategy(name: str, **params: Any) -> Strategy:
    """An instance of the strategy ``name`` with ``params`` validated (ParamError names a bad one)."""
    return get_strategy_class(name)(**params)


def list_strategies() -> dict[str, StrategyInfo]:
    """{name: StrategyInfo} of every registered strategy, sorted by name.

    Iterating gives the names (``", ".join(list_strategies())``); each value has ``description``,
    ``params`` (name -> Param), ``defaults`` and ``summary()`` for listings."""
    discover()
    return {k: _registry[k] for k in sorted(_registry)}
