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
import math
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
    # evaluating (0: off); see evaluation.recalibrate_bn
    bn_recalibration: int = 20
    amp: str = field(default="auto", metadata=_choices("auto", "off", "bf16", "fp16"))  # CUDA only
    # None: on (CPU and CUDA): NHWC trains ResNets 1.1-1.2x faster on CPU too (docs/results/train_throughput.md)
    channels_last: bool | None = None
    # torch.compile the training forward pass (evaluation stays eager); off by default: compiling takes a minute
    # or more on a CPU. Masks, pruning events and resume work unchanged (parameters change shape only at slimming)
    compile: bool = False
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
    # fraction of the dense model's latency to KEEP, measured on the run's device (exclusive with sparsity and
    # macs); see prunekit.latency_budget
    latency: float | None = None
    latency_batch: int | None = None  # batch size the latency budget is timed at (None: run.latency_batch)
    round_to: int | str = 1  # an integer, or "auto" with a latency budget (the fastest of 1, 8, 16, 32)


@dataclass
class RunConfig:
    out: str = "runs"  # parent folder of run directories
    name: str | None = None  # run directory name (None: strategy-dataset-model-timestamp)
    checkpoint_steps: int = 0  # also checkpoint every N optimizer steps inside an epoch (0: epoch ends only)
    latency_batch: int = 32
    latency_runs: int = 20
    progress: str = field(default="auto", metadata=_choices("auto", "rich", "plain", "off"))
    log_every: int = 0  # plain mode: a log line every N steps (0: once per epoch)
    log_seconds: float = 30.0  # plain mode: a progress line at most every N seconds within an epoch (0: off)


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
        """Arguments of ``pk.Budget``: exactly one of sparsity / macs / latency (sparsity 0.5 when none is set)."""
        p = self.prune
        given = [k for k in ("sparsity", "macs", "latency") if getattr(p, k) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"prune.{given[0]} and prune.{given[1]} are both set; keep one "
                "(sparsity = fraction of channels removed, "
                "macs = fraction of dense MACs kept, latency = fraction of the dense latency kept)"
            )
        if p.round_to == "auto" and p.latency is None:
            raise ConfigError(
                "prune.round_to: auto picks the fastest rounding by timing, so it needs a latency budget "
                "(--latency F); with --sparsity or --macs give an integer"
            )
        if p.latency is not None:
            return {"latency": p.latency, "round_to": p.round_to}
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
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})")
    return value


# the smallest valid value of a numeric key (None is checked by the type), whether it is excluded, and what the
# key means to the user; a key that has a command-line flag is named with it
LIMITS: dict[str, tuple[float, bool, str]] = {
    "data.image_size": (1, False, "a side length in pixels, or null for the dataset's own size"),
    "data.limit_train": (1, False, "a number of training samples, or null for all"),
    "data.limit_test": (1, False, "a number of test samples, or null for all"),
    "data.test_fraction": (0, True, "the held-out fraction"),
    "data.workers": (0, False, "a number of DataLoader worker processes"),
    "data.num_classes": (2, False, "a number of classes"),
    "data.channels": (1, False, "a number of input channels"),
    "data.train_size": (1, False, "a number of training samples"),
    "train.epochs": (1, False, "a number of epochs"),
    "train.batch_size": (1, False, "a number of samples per training batch"),
    "train.eval_batch_size": (1, False, "a number of samples per evaluation batch"),
    "train.lr": (0, True, "the learning rate"),
    "train.momentum": (0, False, "the SGD momentum"),
    "train.weight_decay": (0, False, "the weight decay"),
    "train.step_gamma": (0, True, "the factor of the step schedule"),
    "train.warmup_epochs": (0, False, "a number of warm-up epochs"),
    "train.label_smoothing": (0, False, "the label smoothing fraction"),
    "train.bn_recalibration": (0, False, "a number of training batches, 0 for off"),
    "train.threads": (1, False, "a number of CPU threads, or null for torch's default"),
    "prune.round_to": (1, False, "kept channels per group are a multiple of it"),
    "run.checkpoint_steps": (0, False, "a number of optimizer steps, 0 for epoch ends only"),
    "run.latency_batch": (1, False, "a batch size"),
    "prune.latency_batch": (1, False, "a batch size (null: run.latency_batch)"),
    "run.latency_runs": (1, False, "a number of timed runs"),
    "run.log_every": (0, False, "a number of steps, 0 for once per epoch"),
    "run.log_seconds": (0, False, "a number of seconds, 0 for no progress lines within an epoch"),
}
# upper bounds (excluded) of the keys that have one
BELOW = {"data.test_fraction": 1.0, "train.label_smoothing": 1.0}
FLAG_NAMES = {
    "data.image_size": "--image-size",
    "train.epochs": "--epochs",
    "train.batch_size": "--batch-size",
    "train.lr": "--lr",
    "prune.round_to": "--round-to",
}


def _check_limit(key: str, value: Any) -> None:
    """A ConfigError when the number ``value`` of ``key`` is outside its range (see LIMITS)."""
    if key not in LIMITS or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, strict, what = LIMITS[key]
    high = BELOW.get(key)
    flag = f" ({FLAG_NAMES[key]})" if key in FLAG_NAMES else ""
    if value < low or (strict and value == low) or (high is not None and value >= high):
        if high is not None:
            rng = f"in {'(' if strict else '['}{low:g}, {high:g})"
        else:
            rng = f"{'>' if strict else '>='} {low:g}"
        raise ConfigError(f"{key}{flag} must be {rng} ({what}), got {value!r}")


def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], [v.split(".")[-1] for v in valid], n=1)
    if close:
        full = [v for v in valid if v.split(".")[-1] == close[0]][0]
        hint = f"; did you mean {full!r}?"
    else:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key {key!r}{' ' + where if where else ''}{hint}")


# one line per key for `prunekit list keys` (a test checks that every key has one)
KEY_HELP = {
    "data.name": "dataset: digits, fashion-mnist, cifar10, cifar100, imagefolder or synthetic",
    "data.root": "folder holding the dataset's files (null: the dataset's default location)",
    "data.image_size": "resize inputs to this side length (null: the dataset's own size)",
    "data.augment": "random crop and flip on the training set",
    "data.split_seed": "digits/synthetic: seed of the fixed train/test split",
    "data.test_fraction": "digits/synthetic: held-out fraction",
    "data.workers": "DataLoader worker processes (imagefolder only)",
    "data.num_classes": "synthetic: number of classes",
    "data.channels": "synthetic: input channels",
    "data.train_size": "synthetic: training samples",
    "data.limit_train": "use only the first N training samples (null: all)",
    "data.limit_test": "use only the first N test samples (null: all)",
    "model.name": "resnet20/32/56/110, small_cnn, a torchvision name, timm:<name> or package.module:factory",
    "model.kwargs": "extra keyword arguments of the model factory",
    "model.leaf_modules": "submodules the channel graph keeps opaque (qualified or class names)",
    "train.epochs": "training epochs",
    "train.batch_size": "samples per training batch (per DDP process)",
    "train.eval_batch_size": "samples per evaluation batch",
    "train.lr": "peak learning rate",
    "train.optimizer": "sgd or adamw",
    "train.momentum": "SGD momentum",
    "train.nesterov": "SGD Nesterov momentum",
    "train.weight_decay": "weight decay",
    "train.decay_norm_and_bias": "also decay norm-layer parameters and biases (false: as the CHEX recipe)",
    "train.schedule": "learning-rate schedule: cosine, step or constant (per step)",
    "train.step_milestones": "step schedule: fractions of training where the LR is multiplied by step_gamma",
    "train.step_gamma": "step schedule: the LR factor at each milestone",
    "train.warmup_epochs": "linear LR warm-up, in epochs",
    "train.label_smoothing": "label smoothing of the cross-entropy loss",
    "train.bn_recalibration": "after a pruning event, re-estimate BN statistics on N training batches (0: off)",
    "train.amp": "mixed precision on CUDA: auto, off, bf16 or fp16",
    "train.channels_last": "channels_last (NHWC) memory format (null: on, on CPU as on CUDA)",
    "train.compile": "torch.compile the training forward pass (evaluation stays eager)",
    "train.device": "auto, cpu, cuda or cuda:N",
    "train.seed": "seed of initialization, data order and the strategy's random choices",
    "train.deterministic": "ask torch for deterministic algorithms",
    "train.threads": "torch CPU threads (null: torch's default; 1 for models under 10M MACs)",
    "prune.strategy": "a registered strategy (`prunekit list strategies`) or none (dense training)",
    "prune.params": "keyword arguments of the strategy, e.g. prune.params.delta_0=0.2",
    "prune.strategy_params": "other strategies' parameters by name, for compare: prune.strategy_params.NAME.KEY",
    "prune.sparsity": "fraction of prunable channels removed (null: 0.5 unless macs or latency is set)",
    "prune.macs": "fraction of the dense MACs to keep, instead of sparsity",
    "prune.latency": "fraction of the dense latency to keep (timed on the run's device), instead of sparsity",
    "prune.latency_batch": "batch size the latency budget is timed at (null: run.latency_batch)",
    "prune.round_to": "kept channels per group are a multiple of this; auto with a latency budget",
    "run.out": "parent folder of run directories",
    "run.name": "run directory name (null: strategy-dataset-model-timestamp)",
    "run.checkpoint_steps": "also checkpoint every N optimizer steps within an epoch (0: at epoch ends only)",
    "run.latency_batch": "batch size of the final dense vs. pruned latency measurement",
    "run.latency_runs": "fewest timed rounds of that measurement (it also lasts at least 1 s)",
    "run.progress": "auto (rich on a terminal, plain otherwise), rich, plain or off",
    "run.log_every": "plain mode: a log line every N steps (0: once per epoch)",
    "run.log_seconds": "plain mode: a progress line at most every N seconds within an epoch (0: off)",
}


def describe_keys() -> list[str]:
    """``key = default  description`` for every key (what `prunekit list keys` prints)."""
    defaults = Config()
    pairs = []
    for key in all_keys():
        section, name = key.split(".")
        value = yaml.safe_dump(getattr(getattr(defaults, section), name), default_flow_style=True).strip()
        value = value.removesuffix("\n...").strip()
        pairs.append((f"{key} = {value}", KEY_HELP.get(key, "")))
    width = max(len(a) for a, _ in pairs)
    return [f"{a:<{width}}  {b}".rstrip() for a, b in pairs]


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
    _check_limit(key, value)
    if key == "prune.round_to" and isinstance(value, str) and value != "auto":
        raise ConfigError(f"prune.round_to (--round-to) must be an integer >= 1 or 'auto', got {value!r}")
    if parts[0] == "prune" and name in ("sparsity", "macs", "latency") and value is not None:
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{key} must be a fraction strictly between 0 and 1, got {value}")
    setattr(section, name, value)


def merge(cfg: Config, data: dict[str, Any], where: str = "") -> Config:
    """Apply a nested mapping (a YAML file's content) onto ``cfg``. Inside one layer, setting only one of
    prune.sparsity / prune.macs / prune.latency clears the others, so a later layer can switch the kind of budget."""
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
    budgets = ("prune.sparsity", "prune.macs", "prune.latency")
    given = [k for k in budgets if flat.get(k) is not None]
    if len(given) == 1:  # one kind of budget in this layer replaces the kind set by an earlier layer
        for k in budgets:
            if k != given[0]:
                setattr(cfg.prune, k.split(".")[1], None)


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
    check_model_kwargs(cfg)
    return cfg


def check_model_kwargs(cfg: Config) -> None:
    """model.kwargs must not set what prunekit gives the model factory from the dataset."""
    for key in ("num_classes", "in_channels", "input_size"):
        if key in cfg.model.kwargs:
            raise ConfigError(f"model.kwargs.{key} is set by prunekit from the dataset; remove it")


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
