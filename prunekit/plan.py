"""Saving and loading slimmed models as a *pruning plan*: the keep masks, the channel graph (as JSON-able
data) and the slimmed weights. Loading re-applies the plan to a fresh instance of the original
architecture, so no pickled classes are needed:

    pk.save_pruned("small.pt", small, graph, keep, factory="torchvision.models:resnet50")
    small = pk.load_pruned("small.pt")                         # factory recorded in the file
    small = pk.load_pruned("small.pt", model=MyNet())          # or any fresh instance of the architecture
    small = pk.load_pruned("small.pt", trusted_factories=["mypkg.nets:my_net"])   # a factory of your own

A plan is data, so opening one from someone else must not run their code: it is read with
``weights_only=True`` and built only by a *trusted* factory (torchvision, timm, prunekit's own, or one the
caller names), called with plain-data arguments; anything else is refused before its module is imported.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph

from .slimming import slim

FORMAT = "prunekit-plan/1"
# where the public callables that may build a model from a file someone sent live: these modules and their
# public submodules, and the timm package itself (timm.create_model; "timm:<name>" model names). Not the rest
# of timm (timm.data, timm.utils: dataset downloads, file writers) nor private modules (timm.models._hub).
TRUSTED_MODULES = ("torchvision.models", "timm.models", "prunekit.models")
TRUSTED_PACKAGES = ("timm",)
# a factory that itself imports the factory named by its ``name`` argument ("package.module:callable")
MODEL_BUILDER = "prunekit.models:build_model"


def save_pruned(
    path: str,
    slimmed: nn.Module,
    graph: ChannelGraph,
    keep: dict[str, Any],
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
) -> None:
    """Write ``slimmed`` as a plan. ``factory``: "package.module:callable" that builds the dense
    architecture (with ``factory_kwargs``), so ``load_pruned(path)`` needs nothing else."""
    keep = graph.validate_keep(keep)
    plan = {
        "format": FORMAT,
        "factory": factory,
        "factory_kwargs": factory_kwargs or {},
        "graph": graph.to_dict(),
        "keep": {k: v.tolist() for k, v in keep.items()},
        "state_dict": slimmed.state_dict(),
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(plan, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def is_plain_data(value: Any) -> bool:
    """True for None, bool, int, float, str and lists, tuples and str-keyed dicts of those."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain_data(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_data(v) for k, v in value.items())
    return False


def _names(trusted: Iterable[str]) -> tuple[str, ...]:
    return (trusted,) if isinstance(trusted, str) else tuple(trusted)  # one name given as a string: fine too


def is_trusted_factory(factory: str, trusted: Iterable[str] = ()) -> bool:
    """Whether "package.module:callable" may be called: named in ``trusted`` (as itself, or by its module
    or a parent package), or a public callable of a public module of torchvision.models, timm.models or
    prunekit.models, or of the timm package itself."""
    trusted = _names(trusted)
    mod, _, attr = factory.partition(":")

    def under(modules: Iterable[str]) -> bool:
        return any(mod == m or mod.startswith(m + ".") for m in modules)

    if factory in trusted or under(t for t in trusted if ":" not in t):
        return True
    public = all(part and not part.startswith("_") for part in [*mod.split("."), attr])
    return public and (mod in TRUSTED_PACKAGES or under(TRUSTED_MODULES))


def check_factory(factory: Any, kwargs: Any = None, trusted: Iterable[str] = (), where: str = "") -> None:
    """Raise ValueError unless ``factory(**kwargs)`` is safe to call for a file someone sent: a trusted
    factory (see ``is_trusted_factory``) and plain-data ``kwargs``. For ``prunekit.models:build_model``
    the model name it would import ("package.module:callable") must be trusted too. Imports nothing."""
    trusted = _names(trusted)
    kwargs = {} if kwargs is None else kwargs
    src = f" ({where})" if where else ""
    if not isinstance(factory, str) or ":" not in factory:
        raise ValueError(f"factory {factory!r}{src} must look like 'package.module:callable'")
    if not is_trusted_factory(factory, trusted):
        raise ValueError(
            f"cannot load the model factory {factory!r}{src}: it is not trusted (only torchvision, timm and "
            f"prunekit models are); if you trust it, pass trusted_factories=[{factory!r}]"
        )
    if not isinstance(kwargs, dict) or not is_plain_data(kwargs):
        raise ValueError(
            f"the arguments of the model factory {factory!r}{src} are not plain data (numbers, strings, "
            "booleans, None, lists and dicts of those); refusing to call it"
        )
    name = kwargs.get("name")
    if factory == MODEL_BUILDER and isinstance(name, str) and ":" in name:
        check_factory(name, None, trusted, where)


def build_from_factory(factory: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Call "package.module:callable" with ``kwargs``; a clear error when it cannot be found.
    Calls whatever it is given: check a factory from a file with ``check_factory`` first."""
    mod_name, sep, attr = factory.partition(":")
    if not sep:
        raise ValueError(f"factory {factory!r} must look like 'package.module:callable'")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load the model factory {factory!r}: {e}") from e
    return fn(**(kwargs or {}))


def load_pruned(
    path: str,
    model: nn.Module | None = None,
    map_location: str = "cpu",
    trusted_factories: Iterable[str] = (),
) -> nn.Module:
    """The slimmed model saved at ``path``, rebuilt from the original architecture.

    ``model``: a fresh instance of the dense architecture (the plan's factory is then not used).
    ``trusted_factories``: "package.module:callable" factories (or whole modules, "package.module") that
    may build the model besides torchvision, timm and prunekit's own; any other factory recorded in the
    file is refused (ValueError) before its module is imported, as are arguments that are not plain data."""
    plan = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise ValueError(f"{path} is not a prunekit plan (written by prunekit.save_pruned)")
    if model is None:
        if not plan.get("factory"):
            raise ValueError(f"{path} records no factory: pass a fresh instance of the architecture as model=")
        check_factory(plan["factory"], plan.get("factory_kwargs"), trusted_factories, where=f"recorded in {path}")
        model = build_from_factory(plan["factory"], plan.get("factory_kwargs"))
    graph = ChannelGraph.from_dict(plan["graph"])
    keep = {k: torch.tensor(v, dtype=torch.bool) for k, v in plan["keep"].items()}
    small = slim(model, graph, keep)
    small.load_state_dict(plan["state_dict"])
    return small
