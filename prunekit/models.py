"""Models for the harness, built by name:

- ``resnet20`` / ``resnet32`` / ``resnet56`` / ``resnet110``: He et al.'s CIFAR ResNets (3 stages of
  16/32/64 channels, 6n+2 layers) with option-B shortcuts (1x1 conv + BN where the shape changes), so
  every residual channel space has a producer and can be pruned.
- ``small_cnn``: a small conv-BN-ReLU network for 8x8 and 28x28 inputs.
- any torchvision classification model by name (``resnet18``, ``mobilenet_v2``, ...): random init,
  first conv adapted to the data's channels, classifier to ``num_classes``, and for small inputs
  (< 64 px) the stem's stride/max-pool removed so the feature map does not vanish.
- ``timm:<name>``: any timm model (``pip install 'prunekit[timm]'``), built with
  ``timm.create_model(name, pretrained=False, num_classes=..., in_chans=..., **model.kwargs)``; random
  init, never a download. The ``timm:`` prefix always means this, never the ``package:factory`` form
  (for a factory inside the timm package write its module, e.g. ``timm.models.resnet:resnet18``).
- ``package.module:factory``: a user's own model; the factory receives ``num_classes``, ``in_channels``
  and ``input_size`` when its signature accepts them, plus ``model.kwargs``.
- names added with ``@register_model("name")`` (e.g. from a ``--plugins`` module).

    model = build_model("resnet56", num_classes=10, in_channels=3, input_size=32)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make ``factory(num_classes, in_channels, input_size, **kw)`` buildable by ``name``."""

    def deco(fn: ModelFactory) -> ModelFactory:
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"a model named {name!r} is already registered ({_MODELS[name].__module__})")
        _MODELS[name] = fn
        return fn

    return deco


# ---------------------------------------------------------------------------------------- CIFAR ResNet


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU. The shortcut is a 1x1 conv + BN (option B) when
    the stride or the width changes, the identity otherwise."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # [N, planes, H/s, W/s]
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images (He et al. 2016, section 4.2): depth = 6n + 2."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes, layers = width, []
        for stage, mult in enumerate((1, 2, 4)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(planes, width * mult, stride))
                planes = width * mult
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # [N, 16, H, W]
        x = self.layer3(self.layer2(self.layer1(x)))  # [N, 64, H/4, W/4]
        return self.fc(torch.flatten(self.avgpool(x), 1))  # [N, classes]


def cifar_resnet(depth: int = 20, num_classes: int = 10, in_channels: int = 3, **kw: Any) -> CifarResNet:
    """He et al.'s CIFAR ResNet-``depth`` (20/32/56/110) with 1x1-conv (option B) shortcuts."""
    return CifarResNet(depth, num_classes, in_channels, **kw)


def _named_depth(depth: int) -> ModelFactory:
    """The factory of ``resnet<depth>``: the depth is in the name, so ``model.kwargs.depth`` is refused."""

    def factory(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, **kw: Any) -> CifarResNet:
        if "depth" in kw:
            raise ValueError(
                f"model.kwargs.depth: resnet{depth} has depth {depth} by its name; choose the depth with the "
                "model name instead (--model resnet20, resnet32, resnet44, resnet56 or resnet110) and drop "
                "model.kwargs.depth"
            )
        return cifar_resnet(depth, num_classes, in_channels, **kw)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    return factory


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(_named_depth(_depth))


# ---------------------------------------------------------------------------------------- small CNN


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (width, 2w, 4w) with max-pooling between them, global average pooling and
    a linear classifier. Works for any input of at least 4x4 (8x8 digits, 28x28 Fashion-MNIST)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))

        self.features = nn.Sequential(
            block(in_channels, w),
            block(w, w),
            nn.MaxPool2d(2),  # H/2
            block(w, 2 * w),
            nn.MaxPool2d(2),  # H/4
            block(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, width: int = 16) -> SmallCNN:
    """The small CNN for 8x8 / 28x28 inputs."""
    return SmallCNN(num_classes, in_channels, width)


# ---------------------------------------------------------------------------------------- torchvision


def torchvision_names() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def torchvision_model(
    name: str, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, **kw: Any
) -> nn.Module:
    """A randomly initialised torchvision model adapted to the data: first conv to ``in_channels``; for
    inputs under 64 px, the stem conv's stride becomes 1 and a stem max-pool is removed."""
    from torchvision import models

    try:
        model = models.get_model(name, weights=None, num_classes=num_classes, **kw)
    except TypeError:  # some builders do not take num_classes for every variant
        model = models.get_model(name, weights=None, **kw)
        _reset_classifier(model, num_classes)
    first = _first_conv(model)
    if first is not None:
        fname, conv = first
        small = input_size < 64
        if conv.in_channels != in_channels or (small and conv.stride != (1, 1)):
            if conv.groups != 1:
                raise ValueError(f"{name}: the first conv is grouped; cannot adapt it to {in_channels} channels")
            k = conv.kernel_size if not small else tuple(min(k, 3) for k in conv.kernel_size)
            pad = conv.padding if not small else tuple(kk // 2 for kk in k)
            new = nn.Conv2d(
                in_channels,
                conv.out_channels,
                k,
                1 if small else conv.stride,
                pad,
                dilation=conv.dilation,
                bias=conv.bias is not None,
            )
            _replace(model, fname, new)
        if small and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
            model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model


def _reset_classifier(model: nn.Module, num_classes: int) -> None:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        raise ValueError(f"{type(model).__name__}: no Linear classifier found to resize to {num_classes} classes")
    name, lin = last
    _replace(model, name, nn.Linear(lin.in_features, num_classes, bias=lin.bias is not None))


# ---------------------------------------------------------------------------------------- timm

TIMM_PREFIX = "timm:"
TIMM_INSTALL = "pip install 'prunekit[timm]'"


def _import_timm(name: str) -> Any:
    """The timm module, or a one-line ImportError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ImportError(f"model {name!r} needs timm, which is not installed: {TIMM_INSTALL}") from None
    major = str(getattr(timm, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 1:
        raise ImportError(f"model {name!r} needs timm>=1.0, found {timm.__version__}: {TIMM_INSTALL}")
    return timm


def timm_installed() -> str | None:
    """The installed timm version, or None (without importing timm)."""
    from importlib import metadata

    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


def timm_model(name: str, num_classes: int = 1000, in_channels: int = 3, **kw: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)``.

    ``name`` is a timm registry name without the ``timm:`` prefix (a pretrained tag such as
    ``resnet18.a1_in1k`` is accepted and only selects the architecture's config). Weights are never
    downloaded: ``pretrained=True`` and Hub/local-dir sources are refused."""
    spec = TIMM_PREFIX + name
    timm = _import_timm(spec)
    if kw.get("pretrained"):
        raise ValueError(
            f"model {spec!r}: prunekit never downloads weights; drop model.kwargs.pretrained "
            "(timm models are built with random init and trained by the harness)"
        )
    kw.pop("pretrained", None)
    for key, what in (("num_classes", "the dataset's classes"), ("in_chans", "the dataset's channels")):
        if key in kw:
            raise ValueError(f"model {spec!r}: model.kwargs.{key} is set by prunekit from {what}; remove it")
    if not name or ":" in name or "/" in name:
        raise ValueError(
            f"model {spec!r}: give a timm registry name (e.g. timm:resnet18); prunekit never downloads, so "
            "hf-hub:/local-dir: sources are not supported"
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}? " if close else ""
        raise ValueError(f"unknown timm model {name!r}; {hint}see timm.list_models() for the names")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)


# ---------------------------------------------------------------------------------------- leaf modules


def _class_names(cls: type) -> set[str]:
    return {cls.__name__, cls.__qualname__, f"{cls.__module__}.{cls.__qualname__}"}


def _import_class(path: str) -> type | None:
    """``"timm.layers.Conv2dSame"`` -> the class, from an already imported module (a re-export counts); else
    None. Nothing is imported: a config names leaf modules, and importing a module runs its code, while any
    class the model uses is imported already."""
    mod_name, _, attr = path.rpartition(".")
    obj = getattr(sys.modules.get(mod_name), attr, None) if mod_name else None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def resolve_leaf_modules(model: nn.Module, names: list[str] | tuple[str, ...] | None) -> list[type | str]:
    """``model.leaf_modules`` -> the ``leaf_modules`` argument of ``pk.build_graph``.

    Each entry is a submodule's qualified name (``"layer1.0"``), a class name (``"Conv2dSame"``), or a
    class's dotted path (``"timm.layers.Conv2dSame"``, or its defining module's
    ``"timm.layers.conv2d_same.Conv2dSame"``). A class matches the model's submodules of that class or a
    subclass. A name that matches nothing in the model is a one-line ValueError with close matches."""
    out: list[type | str] = []
    if not names:
        return out
    subs = dict(model.named_modules())
    classes = {type(m) for m in subs.values()}
    for entry in names:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"model.leaf_modules entries are module names or class names, got {entry!r}")
        if entry in subs:
            out.append(entry)
            continue
        found = [c for c in classes if entry in _class_names(c)]
        cls = _import_class(entry) if not found else None
        if cls is not None:
            found = [c for c in classes if issubclass(c, cls)]
        if found:
            out.extend(sorted(set(found) if cls is None else {cls}, key=lambda c: c.__qualname__))
            continue
        known = sorted({n for n in subs if n} | {n for c in classes for n in _class_names(c)})
        close = difflib.get_close_matches(entry, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        what = f"names class {cls.__qualname__}, not used in" if cls is not None else "matches no submodule or class of"
        raise ValueError(
            f"model.leaf_modules: {entry!r} {what} the model {type(model).__name__}{hint} (entries are "
            "qualified submodule names like 'layer1.0' or class names like 'Conv2dSame')"
        )
    return out


# ---------------------------------------------------------------------------------------- build_model


def _call_factory(
    fn: Callable[..., nn.Module], num_classes: int, in_channels: int, input_size: int, kw: dict[str, Any]
) -> nn.Module:
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    call = {k: v for k, v in args.items() if takes_any or k in params}
    return fn(**call, **kw)


def _kwargs_error(name: str, kw: dict[str, Any], e: TypeError) -> ValueError | None:
    """A one-line error when the TypeError ``e`` of building ``name`` is about one of ``model.kwargs``
    (an argument the factory does not take, or one it is given twice); None for any other TypeError."""
    text = str(e)
    bad = [k for k in kw if repr(k) in text]
    if not bad or "argument" not in text:
        return None
    return ValueError(
        f"model {name!r} cannot take model.kwargs.{bad[0]}={kw[bad[0]]!r} ({text}); remove it or check the "
        "arguments of the model's factory"
    )


def list_models() -> list[str]:
    """Registered names (CIFAR ResNets, small_cnn, plugins); torchvision names are listed separately."""
    return sorted(_MODELS)


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, **kw: Any) -> nn.Module:
    """The model ``name`` for ``num_classes`` classes and inputs [N, in_channels, input_size, input_size].

    ``name``: a registered name (``list_models()``), a torchvision model name, ``timm:<name>`` or
    ``package.module:factory``. Raises ValueError listing the choices for an unknown name, and for
    ``kw`` the model does not take."""
    try:
        model = _build(name, num_classes, in_channels, input_size, kw)
    except TypeError as e:
        err = _kwargs_error(name, kw, e) if kw else None
        if err is None:
            raise
        raise err from e
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {name!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _build(name: str, num_classes: int, in_channels: int, input_size: int, kw: dict[str, Any]) -> Any:
    if name.startswith(TIMM_PREFIX):  # before package:factory: "timm:resnet18" is a timm model name
        model = timm_model(name[len(TIMM_PREFIX) :], num_classes, in_channels, **kw)
    elif ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except ImportError as e:
            raise ValueError(f"model {name!r}: cannot import module {mod_name!r} ({e}); is it on PYTHONPATH?") from e
        except AttributeError:
            raise ValueError(f"model {name!r}: module {mod_name!r} has no attribute {attr!r}") from None
        model = _call_factory(fn, num_classes, in_channels, input_size, kw)
    elif name in _MODELS:
        model = _call_factory(_MODELS[name], num_classes, in_channels, input_size, kw)
    else:
        tv = torchvision_names()
        if name not in tv:
            close = difflib.get_close_matches(name, list(_MODELS) + tv, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise ValueError(
                f"unknown model {name!r}; {hint}choices: {', '.join(list_models())}, any torchvision model "
                f"(`prunekit list models`), timm:<name>, or 'package.module:factory'"
            )
        model = torchvision_model(name, num_classes, in_channels, input_size, **kw)
    return model


def check_model(model: nn.Module, in_channels: int, input_size: int, num_classes: int, name: str = "model") -> None:
    """A forward pass on zeros; a clear error when the model does not fit the data."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, input_size, input_size))
    except Exception as e:
        raise ValueError(
            f"{name} does not accept inputs of shape [N, {in_channels}, {input_size}, {input_size}] ({e}); "
            "try a larger data.image_size or a model made for small inputs (resnet20, small_cnn)"
        ) from e
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} returns {shape}; the harness needs logits of shape [N, {num_classes}]")


__all__ = [
    "BasicBlock",
    "CifarResNet",
    "SmallCNN",
    "build_model",
    "check_model",
    "cifar_resnet",
    "list_models",
    "register_model",
    "resolve_leaf_modules",
    "small_cnn",
    "timm_installed",
    "timm_model",
    "torchvision_model",
    "torchvision_names",
]
