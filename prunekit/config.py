"""Run configuration: typed dataclasses and their layering.

    defaults  <  YAML file (--config)  <  command-line flags  <  --set key=value (dotted keys)

    cfg = load_config("configs/cifar10_resnet56_chex.yaml", sets=["train.lr=0.05", "prune.round_to=8"])

Every key is checked: an unknown key or a value of the wrong type is a ConfigError that names the key,
what was expected and (for a misspelt key) the closest valid one. ``prune.params`` is a free dict handed
to the strategy's constructor (the strategy checks it); ``prune.strategy_params`` holds other strategies'
parameters by name, for ``compare``; ``model.kwargs`` is handed to the model factory.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message says which and how to fix it."""


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass
class DataConfig:
    name: str = "digits"  # digits | fashion-mnist | cifar10 | cifar100 | imagefolder | synthetic
    root: str | None = None  # where the files are (None: the dataset's default location)
    image_size: int | None = None  # resize to this side length (None: the dataset's native size)
    augment: bool = True  # standard augmentation (random crop + flip) on the training set
    split_seed: int = 0  # digits/synthetic: seed of the fixed train/test split
    test_fraction: float = 0.2  # digits/synthetic: held-out fraction
    workers: int = 0  # DataLoader workers (imagefolder only; in-memory datasets need none)
    # synthetic only
    num_classes: int = 10
    channels: int = 3
    train_size: int = 512
    limit_train: int | None = None  # use only the first N training samples (quick runs)
    limit_test: int | None = None


@dataclass
class ModelConfig:
    # resnet20/32/56/110 | small_cnn | any torchvision name | timm:<name> | package.module:factory
    name: str = "resnet20"
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments for the model factory
    # submodules the channel graph keeps opaque (their boundary channels frozen): qualified names
    # ("layer1.0") or class names ("Conv2dSame", "timm.layers.Conv2dSame"); see models.resolve_leaf_modules
    leaf_modules: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 0.1
    optimizer: str = field(default="sgd", metadata=_choices("sgd", "adamw"))
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # false: no weight decay on parameters with fewer than 2 dims (norm-layer weights and biases, every bias),
    # as in the CHEX authors' recipe (their BN gammas, which the allocation ranks, are not decayed)
    decay_norm_and_bias: bool = False
    schedule: str = field(default="cosine", metadata=_choices("cosine", "step", "constant"))
    step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    step_gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # after an epoch with a pruning event, re-estimate BN statistics on this many training batches before
    # evaluating (0: off); see harness.recalibrate_bn
    bn_recalibration: int = 20
    amp: str = field(default="auto", metadata=_choices("auto", "off", "bf16", "fp16"))  # CUDA only
    channels_last: bool | None = None  # None: on with CUDA, off on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None  # torch CPU threads (None: torch's default; 1 for models under 10M MACs)


@dataclass
class PruneConfig:
    strategy: str = "chex"  # any registered strategy (`prunekit list`), or "none" for dense training
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the strategy
    # keyword arguments of other strategies, by name: what `compare` gives each one it runs
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    sparsity: float | None = None  # fraction of prunable channels removed (default 0.5 when macs unset)
    macs: float | None = None  # fraction of the dense MACs to KEEP (e.g. 0.5); exclusive with sparsity
    round_to: int = 1


@dataclass
class RunConfig:
    out: str = "runs"  # parent folder of run directories
    name: str | None = None  # run directory name (None: strategy-dataset-model-timestamp)
    checkpoint_steps: int = 0  # also checkpoint every N optimizer steps inside an epoch (0: epoch ends only)
    latency_batch: int = 32
    latency_runs: int = 20
    progress: str = field(default="auto", metadata=_choices("auto", "rich", "plain", "off"))
    log_every: int = 0  # plain mode: a log line every N steps (0: once per epoch)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def copy(self) -> Config:
        return copy.deepcopy(self)

    def budget_kwargs(self) -> dict[str, Any]:
        """Arguments of ``pk.Budget``: exactly one of sparsity / macs (sparsity 0.5 when neither is set)."""
        p = self.prune
        if p.sparsity is not None and p.macs is not None:
            raise ConfigError(
                "prune.sparsity and prune.macs are both set; keep one "
                "(sparsity = fraction of channels removed, "
                "macs = fraction of dense MACs kept)"
            )
        if p.macs is not None:
            return {"macs": p.macs, "round_to": p.round_to}
        return {"sparsity": 0.5 if p.sparsity is None else p.sparsity, "round_to": p.round_to}

    def strategy_kwargs(self, name: str | None = None) -> dict[str, Any]:
        """The parameters strategy ``name`` (default: ``prune.strategy``) runs with: its entry of
        ``prune.strategy_params``, then ``prune.params`` on top when it is ``prune.strategy``."""
        p = self.prune
        name = p.strategy if name is None else name
        for key, value in p.strategy_params.items():
            if not isinstance(value, dict):
                raise ConfigError(
                    f"prune.strategy_params.{key} must be a mapping of that strategy's parameters, got {value!r}; "
                    f"e.g. --set prune.strategy_params.{key}.<param>=<value>"
                )
        out = dict(p.strategy_params.get(name, {}))
        if name == p.strategy:
            out.update(p.params)
        return out


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
FREE_DICTS = ("prune.params", "prune.strategy_params", "model.kwargs")  # keys inside are not checked here


# ---------------------------------------------------------------------------------------- validation


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTIONS}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints are accepted for floats, nothing else)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key} must be {_describe(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r} ({type(value).__name__})")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r} ({type(value).__name__})")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})")
    return value


def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], [v.split(".")[-1] for v in valid], n=1)
    if close:
        full = [v for v in valid if v.split(".")[-1] == close[0]][0]
        hint = f"; did you mean {full!r}?"
    else:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key {key!r} {where}{hint}")


def all_keys() -> list[str]:
    """Every dotted key of the config (the keys inside ``FREE_DICTS`` are free)."""
    out = []
    for sec, cls in _section_classes().items():
        out += [f"{sec}.{f.name}" for f in dataclasses.fields(cls)]
    return out


def set_value(cfg: Config, key: str, value: Any, where: str = "") -> None:
    """Set the dotted ``key`` of ``cfg`` to ``value`` after checking the key and the value's type."""
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise _unknown(key, all_keys(), where)
    if len(parts) == 1:
        if not isinstance(value, dict):
            raise ConfigError(
                f"{key} is a section; give its keys, e.g. {key}.{dataclasses.fields(getattr(cfg, key))[0].name}=..."
            )
        for k, v in value.items():
            set_value(cfg, f"{key}.{k}", v, where)
        return
    section = getattr(cfg, parts[0])
    fields = {f.name: f for f in dataclasses.fields(section)}
    name = parts[1]
    if name not in fields:
        raise _unknown(key, all_keys(), where)
    hints = typing.get_type_hints(type(section))
    tp = hints[name]
    if len(parts) > 2:  # into a free dict: prune.params.delta_0=0.3
        target = getattr(section, name)
        if not isinstance(target, dict):
            raise ConfigError(f"{parts[0]}.{name} is not a mapping; {key!r} cannot set a key inside it")
        for p in parts[2:-1]:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{key}: {p!r} is not a mapping")
        target[parts[-1]] = value
        return
    choices = fields[name].metadata.get("choices")
    if isinstance(value, bool) and choices and ("on" if value else "off") in choices:
        value = "on" if value else "off"  # YAML reads a bare off/on as a boolean: `--set run.progress=off`
    value = _coerce(value, tp, key)
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}{hint}")
    if key == "train.bn_recalibration" and value < 0:
        raise ConfigError(f"{key} is a number of training batches and must be >= 0 (0: off), got {value}")
    if parts[0] == "prune" and name in ("sparsity", "macs") and value is not None:
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{key} must be a fraction strictly between 0 and 1, got {value}")
    setattr(section, name, value)


def merge(cfg: Config, data: dict[str, Any], where: str = "") -> Config:
    """Apply a nested mapping (a YAML file's content) onto ``cfg``. Inside one layer, setting only one of
    prune.sparsity / prune.macs clears the other, so a later layer can switch the kind of budget."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections {where}, got {type(data).__name__}")
    flat = _flatten(data)
    _apply_layer(cfg, flat, where)
    return cfg


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        free = key in FREE_DICTS or key.startswith(tuple(f"{k}." for k in FREE_DICTS))
        if isinstance(v, dict) and not free and key.count(".") < 1:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _apply_layer(cfg: Config, flat: dict[str, Any], where: str) -> None:
    for key, value in flat.items():
        set_value(cfg, key, value, where)
    keys = set(flat)
    if "prune.macs" in keys and "prune.sparsity" not in keys and flat["prune.macs"] is not None:
        cfg.prune.sparsity = None
    if "prune.sparsity" in keys and "prune.macs" not in keys and flat["prune.sparsity"] is not None:
        cfg.prune.macs = None


def parse_set(item: str) -> tuple[str, Any]:
    """``"train.lr=0.05"`` -> ("train.lr", 0.05); the value is read as YAML (numbers, true/false, null,
    lists [a, b])."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. --set train.lr=0.05), got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist (see configs/ for examples)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections (data, model, train, prune, run)")
    return data


def load_config(
    path: str | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or ``base``) < YAML at ``path`` < ``flags`` ({dotted key: value}, None values skipped) <
    ``sets`` (["key=value", ...])."""
    cfg = base.copy() if base is not None else Config()
    if path:
        merge(cfg, load_yaml(path), where=f"in {path}")
    if flags:
        _apply_layer(cfg, {k: v for k, v in flags.items() if v is not None}, "(command-line flag)")
    if sets:
        _apply_layer(cfg, dict(parse_set(s) for s in sets), "(--set)")
    cfg.budget_kwargs()  # both budgets set -> error now, not after data loading
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    """A Config from a (resolved) mapping, e.g. a run directory's config.yaml."""
    return merge(Config(), data)


__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "PruneConfig",
    "RunConfig",
    "load_config",
    "from_dict",
    "merge",
    "set_value",
    "parse_set",
    "all_keys",
]
