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

import copy
import importlib
import json
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph

from .checkpoint import atomic_write, write_text
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
    check: bool = True,
    input_spec: dict[str, Any] | None = None,
) -> None:
    """Write ``slimmed`` as a plan. ``factory``: "package.module:callable" that builds the dense
    architecture (with ``factory_kwargs``), so ``load_pruned(path)`` needs nothing else. ``input_spec``:
    how to make the model's inputs (plain data, e.g. ``prunekit.data.input_spec``: shape, scaling, mean and
    std), kept in the file as ``torch.load(path, weights_only=True)["input"]``.

    With a factory, the plan is checked before it is written: the factory is called with
    ``factory_kwargs`` (your own code, as you named it), the result slimmed with ``graph`` and ``keep``
    and given ``slimmed``'s weights; a ValueError when that fails, i.e. when ``load_pruned`` could not
    rebuild this model (wrong factory arguments, a graph of another model). ``check=False`` skips that (a
    plan for a machine where the factory's module lives, but this one lacks it)."""
    keep = graph.validate_keep(keep)
    if factory is not None and check:
        check_rebuilds(slimmed, graph, keep, factory, factory_kwargs or {})
    plan = {
        "format": FORMAT,
        "factory": factory,
        "factory_kwargs": factory_kwargs or {},
        "graph": graph.to_dict(),
        "keep": {k: v.tolist() for k, v in keep.items()},
        "state_dict": slimmed.state_dict(),
    }
    if input_spec is not None:
        plan["input"] = input_spec
    atomic_write(path, lambda tmp: torch.save(plan, tmp))


def check_rebuilds(
    slimmed: nn.Module, graph: ChannelGraph, keep: dict[str, Any], factory: str, kwargs: dict[str, Any]
) -> None:
    """Raise ValueError unless ``factory(**kwargs)`` slimmed with ``graph`` and ``keep`` takes the weights of
    ``slimmed`` (what ``load_pruned`` will do with the plan)."""
    call = f"{factory}(**{kwargs!r})"
    if not is_plain_data(kwargs):
        raise ValueError(f"save_pruned: the factory arguments of {factory!r} must be plain data, got {kwargs!r}")
    try:
        dense = build_from_factory(factory, kwargs)
    except Exception as e:
        raise ValueError(f"save_pruned: {call} cannot build the model ({e}); load_pruned could not either") from e
    try:
        slim(dense, graph, keep).load_state_dict(slimmed.state_dict())
    except (ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"save_pruned: {call} does not rebuild the saved model ({first}); pass the factory and arguments "
            "the model was built with, so that load_pruned can load the plan"
        ) from None


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
    """The slimmed model saved at ``path``, rebuilt from the original architecture, in eval mode.

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
    return small.eval()


# ---------------------------------------------------------------------------------------- JSON plans

JSON_FORMAT = "prunekit-plan-json"
JSON_VERSION = 1
_SKIP_ATTRS = ("training", "forward")  # instance attributes that are not the architecture's sizes


def _plain(value: Any) -> Any:
    """``value`` as JSON data (tuples and torch.Size as lists), or None when it is not plain data."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None


def _size_attributes(module: nn.Module) -> dict[str, Any]:
    """The plain-data instance attributes of ``module`` (channel counts, groups, shapes), as JSON data."""
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k in _SKIP_ATTRS:
            continue
        p = _plain(v)
        if p is not None or v is None:
            out[k] = p
    return out


def _strip_masked(model: nn.Module) -> None:
    """Drop the masked-statistics forwards ``apply_masks`` installs (the slimmed model never has them)."""
    from prunekit.graphs import masked

    for m in model.modules():
        if masked.installed(m):
            masked.remove(m)


def _tensor_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def plan_dict(
    model: nn.Module,
    graph: ChannelGraph,
    keep: dict[str, Any],
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    input_spec: dict[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """The JSON plan (see ``save_plan``) of slimming the dense ``model`` with ``keep``, as a dict."""
    from prunekit.graphs.trace import unwrap

    from . import __version__
    from .masks import pruned_positions, tensor_of

    if factory_kwargs is not None and not (isinstance(factory_kwargs, dict) and is_plain_data(factory_kwargs)):
        raise ValueError("factory_kwargs must be plain data (numbers, strings, booleans, None, lists, str-keyed dicts)")
    dense = copy.deepcopy(unwrap(model)).cpu()
    _strip_masked(dense)
    valid = graph.validate_keep(keep)
    small = slim(dense, graph, valid)
    tensors = []
    for (module, param), dims in sorted(pruned_positions(graph, valid).items()):
        t = tensor_of(dense, module, param)
        kept = {}
        for dim in sorted({d for d, _ in dims}):
            alive = torch.ones(t.shape[dim], dtype=torch.bool)
            for d, pos in dims:
                if d == dim:
                    alive[pos] = False
            kept[str(dim)] = torch.nonzero(alive).flatten().tolist()
        tensors.append(
            {
                "name": f"{module}.{param}" if module else param,
                "module": module,
                "param": param,
                "shape": list(t.shape),
                "kept": kept,
            }
        )
    attributes, classes = [], []
    small_modules = dict(small.named_modules())
    for name, mod in dense.named_modules():
        if type(small_modules[name]) is not type(mod):  # e.g. an attention layer that runs on fewer channels
            classes.append(
                {"module": name, "before": _class_name(type(mod)), "after": _class_name(type(small_modules[name]))}
            )
        before, after = _size_attributes(mod), _size_attributes(small_modules[name])
        for k in sorted(set(before) | set(after)):
            if before.get(k) != after.get(k):
                if k not in before or k not in after:
                    raise ValueError(
                        f"slimming changed which attributes {name or 'the model'} has ({k}); "
                        "such a plan cannot be written as JSON"
                    )
                attributes.append({"module": name, "attr": k, "before": before[k], "after": after[k]})
    groups = []
    for grp in graph.groups:
        mask = valid.get(grp.id, torch.ones(grp.size, dtype=torch.bool))
        groups.append(
            {
                "id": grp.id,
                "size": grp.size,
                "kept": torch.nonzero(mask).flatten().tolist(),
                "members": [{"module": m.module, "param": m.param, "dim": m.dim, "role": m.role} for m in grp.members],
            }
        )
    plan = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "written_by": {"prunekit": __version__, "torch": torch.__version__.split("+")[0]},
        "factory": factory,
        "factory_kwargs": factory_kwargs or {},
        "model_tensors": _tensor_shapes(dense),
        "groups": groups,
        "tensors": tensors,
        "attributes": attributes,
        "classes": classes,
    }
    if input_spec is not None:
        if not is_plain_data(input_spec):
            raise ValueError("input_spec must be plain data (numbers, strings, lists, str-keyed dicts)")
        plan["input"] = input_spec
    if factory is not None and check:  # load_plan(path) must be able to rebuild the dense model
        call = f"{factory}(**{factory_kwargs or {}!r})"
        try:
            built = build_from_factory(factory, factory_kwargs)
        except Exception as e:
            raise ValueError(f"save_plan: {call} cannot build the model ({e}); load_plan could not either") from e
        error = _fit_error(plan, unwrap(built), f"save_plan: the model {call} builds")
        if error:
            raise ValueError(f"{error}; pass the factory and arguments the model was built with")
    # the plan must rebuild exactly what slim() built, or it is not written
    again = replay_plan(plan, dense, where="the plan being written")
    mismatch = _differences(again, small)
    if mismatch:
        raise RuntimeError(f"internal error: replaying the JSON plan does not give the slimmed model ({mismatch})")
    return plan


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _pruned_class(name: str, base: type, where: str) -> type:
    """The class ``name`` ("module:Class") a plan gives a module: only prunekit's own subclasses of the
    module's class are accepted (a plan is data: it must not make a model run code it names)."""
    mod_name, _, qual = name.partition(":")
    if not mod_name.startswith("prunekit.") or not qual or "." in qual or qual.startswith("_"):
        raise ValueError(f"{where} names the class {name!r}; only prunekit's own layer classes are accepted")
    cls = getattr(importlib.import_module(mod_name), qual, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise ValueError(f"{where} names the class {name!r}, which is not a {base.__name__} of prunekit")
    return cls


def _differences(a: nn.Module, b: nn.Module) -> str:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return f"tensors {sorted(sa.keys() ^ sb.keys())[:3]}"
    for k in sa:
        if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k]):
            return f"tensor {k}"
    mb = dict(b.named_modules())
    for name, m in a.named_modules():
        if type(m) is not type(mb[name]) or _size_attributes(m) != _size_attributes(mb[name]):
            return f"attributes of {name or 'the model'}"
    return ""


def _dumps(value: Any, indent: int = 0) -> str:
    """JSON with one key per line, and lists of numbers or strings on one line (readable, diffable)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad} {json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(f"{pad} {_dumps(v, indent + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value)


def save_plan(
    path: str,
    model: nn.Module,
    graph: ChannelGraph,
    keep: dict[str, Any],
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    input_spec: dict[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Write the plan of slimming the dense ``model`` with ``keep`` as readable JSON; returns the plan.

    The file holds the model factory and its arguments (optional), the kept channel indices of every
    prunable group with its members (module, parameter, dim), and the replay recipe that ``load_plan`` uses:
    the kept indices of every tensor along each sliced dim and the module attributes that change (channel
    counts, groups, shapes), with the dense shapes of every tensor to check that a model fits. Replaying
    needs neither the channel graph nor the weights (``load_plan(..., state_dict=...)`` adds those), and
    the plan is replayed once before it is written and checked to give exactly ``pk.slim(model, graph, keep)``.

    ``factory``: "package.module:callable" that builds the dense architecture with ``factory_kwargs``; it is
    called once (``check=False`` skips that) to check that it builds a model the plan fits, so that
    ``load_plan(path)`` will work. ``input_spec``: how the model's inputs are made (plain data: shape,
    scaling, mean and std), kept as the plan's ``"input"``."""
    plan = plan_dict(model, graph, keep, factory, factory_kwargs, input_spec, check)
    write_text(path, _dumps(plan) + "\n")
    return plan


def read_plan(path: str) -> dict[str, Any]:
    """The JSON plan at ``path``, with its format and version checked (ValueError naming what is wrong)."""
    try:
        with open(path) as f:
            plan = json.load(f)
    except UnicodeDecodeError:
        plan = None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a JSON plan ({e}); a .pt plan is opened with prunekit.load_pruned") from None
    return check_plan(plan, path)


def check_plan(plan: Any, where: str = "the plan") -> dict[str, Any]:
    """``plan`` if it is a JSON plan this prunekit reads, else ValueError saying why."""
    if not isinstance(plan, dict) or plan.get("format") != JSON_FORMAT:
        raise ValueError(
            f"{where} is not a prunekit JSON plan (written by prunekit.save_plan); a .pt plan is "
            "opened with prunekit.load_pruned"
        )
    version = plan.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: plan version {version!r} is not a version number")
    if version > JSON_VERSION:
        raise ValueError(
            f"{where} is a version-{version} plan; this prunekit reads version {JSON_VERSION} "
            "and older: upgrade prunekit"
        )
    parts = ("model_tensors", "tensors", "attributes", "groups")
    missing = [k for k in parts if not isinstance(plan.get(k), (dict, list))]
    if missing:
        raise ValueError(f"{where} is incomplete: no {', '.join(missing)}")
    return plan


def _fit_error(plan: dict[str, Any], model: nn.Module, where: str) -> str:
    """Why ``model`` is not the dense architecture the plan was made for ("" when it is)."""
    want = plan["model_tensors"]
    have = _tensor_shapes(model)
    problems = []
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        problems.append(f"the model has no {', '.join(missing[:3])}{more}")
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        problems.append(f"the model has tensors the plan does not know ({', '.join(extra[:3])}{more})")
    wrong = [k for k in want if k in have and list(have[k]) != list(want[k])]
    for k in wrong[:2]:
        problems.append(f"{k} has shape {list(have[k])}, the plan was made for {list(want[k])}")
    if len(wrong) > 2:
        problems.append(f"{len(wrong) - 2} more tensors differ in shape")
    if not problems:
        return ""
    return f"{where} does not fit the model: " + "; ".join(problems) + " (was it made for another model or size?)"


def replay_plan(plan: dict[str, Any], model: nn.Module, where: str = "the plan") -> nn.Module:
    """A copy of the dense ``model`` slimmed as ``plan`` (a JSON plan dict) says; ``model`` is untouched.
    Uses only the plan's recipe (no channel graph). ValueError when the model does not fit the plan."""
    from prunekit.graphs.trace import unwrap

    check_plan(plan, where)
    small = copy.deepcopy(unwrap(model))
    _strip_masked(small)
    error = _fit_error(plan, small, where)
    if error:
        raise ValueError(error)
    with torch.no_grad():
        for entry in plan["tensors"]:
            try:
                mod = small.get_submodule(entry["module"])
            except AttributeError:
                raise ValueError(f"{where} does not fit the model: it has no module {entry['module']!r}") from None
            param = entry["param"]
            t = mod._parameters.get(param) if param in mod._parameters else mod._buffers.get(param)
            if t is None:
                raise ValueError(f"{where} does not fit the model: {entry['name']} does not exist")
            if list(t.shape) != list(entry["shape"]):
                raise ValueError(
                    f"{where} does not fit the model: {entry['name']} has shape {list(t.shape)}, the "
                    f"plan was made for {list(entry['shape'])}"
                )
            new = t.detach()
            for dim, idx in entry["kept"].items():
                d = int(dim)
                index = torch.tensor(idx, dtype=torch.long)
                if len(idx) == 0 or int(index.min()) < 0 or int(index.max()) >= new.shape[d]:
                    raise ValueError(f"{where}: kept indices of {entry['name']} along dim {d} are out of range")
                new = new.index_select(d, index.to(new.device))
            if param in mod._parameters:
                mod._parameters[param] = nn.Parameter(new.contiguous(), requires_grad=t.requires_grad)
            else:
                mod._buffers[param] = new.contiguous()
    for entry in plan["attributes"]:
        mod = small.get_submodule(entry["module"])
        name = entry["attr"]
        if not hasattr(mod, name) or _plain(getattr(mod, name)) != entry["before"]:
            have = _plain(getattr(mod, name, None))
            raise ValueError(
                f"{where} does not fit the model: {entry['module'] or 'the model'}.{name} is {have!r}, "
                f"the plan was made for {entry['before']!r}"
            )
        old = getattr(mod, name)
        value = entry["after"]
        if isinstance(old, (tuple, list, torch.Size)):
            value = tuple(value) if isinstance(old, (tuple, torch.Size)) else list(value)
        setattr(mod, name, value)
    for entry in plan.get("classes", []):
        mod = small.get_submodule(entry["module"])
        if _class_name(type(mod)) != entry["before"]:
            raise ValueError(
                f"{where} does not fit the model: {entry['module'] or 'the model'} is a "
                f"{_class_name(type(mod))}, the plan was made for {entry['before']}"
            )
        mod.__class__ = _pruned_class(entry["after"], type(mod), where)
    return small


def _load_weights(state_dict: Any, map_location: str) -> dict[str, torch.Tensor]:
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location=map_location, weights_only=True)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("state_dict must be a dict of tensors (or the path of a file holding one)")
    return state_dict


def load_plan(
    plan: str | dict[str, Any],
    model: nn.Module | None = None,
    state_dict: dict[str, torch.Tensor] | str | None = None,
    trusted_factories: Iterable[str] = (),
    map_location: str = "cpu",
) -> nn.Module:
    """The slimmed model a JSON plan (a path or the dict ``save_plan`` returned) describes, in eval mode.

    ``model``: a fresh instance of the dense architecture (else the plan's factory builds one; the same
    trust rules as ``load_pruned``). ``state_dict`` (a dict or the path of a ``torch.save`` file, read with
    ``weights_only=True``): weights of the dense model (loaded before the plan is replayed) or of the slimmed
    one (loaded after), told apart by their shapes. ``model`` itself is not changed. ValueError when the
    model does not fit the plan (another architecture or size), for an unknown plan version, and for
    weights that fit neither the dense nor the slimmed model."""
    where = plan if isinstance(plan, str) else "the plan"
    plan = read_plan(plan) if isinstance(plan, (str, os.PathLike)) else check_plan(plan, where)
    if model is None:
        if not plan.get("factory"):
            raise ValueError(f"{where} records no factory: pass a fresh instance of the architecture as model=")
        check_factory(plan["factory"], plan.get("factory_kwargs"), trusted_factories, where=f"recorded in {where}")
        model = build_from_factory(plan["factory"], plan.get("factory_kwargs"))
    else:
        from prunekit.graphs.trace import unwrap

        model = copy.deepcopy(unwrap(model))
    weights = None if state_dict is None else _load_weights(state_dict, map_location)
    dense_fit = weights is not None and {k: list(v.shape) for k, v in weights.items()} == plan["model_tensors"]
    if dense_fit:
        error = _fit_error(plan, model, where)
        if error:
            raise ValueError(error)
        model.load_state_dict(weights)
    small = replay_plan(plan, model, where)
    if weights is not None and not dense_fit:
        want = _tensor_shapes(small)
        got = {k: list(v.shape) for k, v in weights.items()}
        if got != want:
            bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            more = f" ({len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ValueError(
                f"the state_dict fits neither the dense nor the slimmed model of {where}: {bad[0]} has shape "
                f"{got.get(bad[0])}, the slimmed model {want.get(bad[0])}{more}"
            )
        small.load_state_dict(weights)
    return small.eval()
