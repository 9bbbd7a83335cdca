"""ONNX export of a (slimmed) model, checked against PyTorch with onnxruntime.

    small = pk.slim(model, g, keep)
    report = pk.export_onnx(small, torch.randn(1, 3, 224, 224), "small.onnx")
    print(report.max_abs_diff)                 # |onnxruntime(x) - small(x)|, max over the check batches

    import onnxruntime as ort                  # deployment: no torch, no prunekit
    sess = ort.InferenceSession("small.onnx")
    logits = sess.run(None, {"input": x_numpy})[0]

The model is exported with torch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``,
which needs onnxscript), with a dynamic batch dimension by default, then loaded in onnxruntime and run on the
example and on a random batch of another size; the largest absolute difference to the PyTorch output is
returned, and a difference above ``atol + rtol * max|output|`` is an error (an ONNX file that computes
something else is never written silently). Needs the optional extra: ``pip install 'prunekit[onnx]'``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ONNX_INSTALL = "pip install 'prunekit[onnx]'"
INPUT_NAME = "input"
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit: larger models keep their weights in PATH.data


def require_onnx() -> None:
    """Raise ImportError (one line, with the install command) unless onnx, onnxscript and onnxruntime import."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        names = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        verb = "is" if len(missing) == 1 else "are"
        raise ImportError(f"ONNX export needs {names}, which {verb} not installed: {ONNX_INSTALL}")


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and how closely onnxruntime reproduces PyTorch."""

    path: str
    max_abs_diff: float  # max |onnxruntime - torch| over every output of every check batch
    max_abs_output: float  # max |torch output| over the same (the scale the difference compares to)
    check_batches: list[int]  # batch sizes compared
    opset: int | None
    input_name: str = INPUT_NAME
    dynamic_batch: bool = True


def _outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's output, in the order the ONNX graph lists them."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return [out.logits]
    leaves, _ = torch.utils._pytree.tree_flatten(out)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def onnx_session(path: str, threads: int | None = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for ``path`` (``threads``: intra-op threads; None: ORT's default)."""
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str,
    *,
    dynamic_batch: bool = True,
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> OnnxExport:
    """Write ``model`` (eval mode; ``model`` itself is not changed) as ONNX to ``path`` and check it.

    ``example``: one input tensor ``[N, C, H, W]`` (its values do not matter); the ONNX input is named
    ``"input"``, with a dynamic batch dimension unless ``dynamic_batch=False``. ``opset``: the ONNX opset
    (None: the exporter's default). With ``check`` (default), onnxruntime runs the file on ``example`` and on
    a seeded random batch of another size, and a difference to PyTorch above ``atol + rtol * max|output|``
    raises RuntimeError (the file is removed). Raises ImportError when the ``onnx`` extra is missing."""
    require_onnx()
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx needs an nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.dim() < 1:
        raise TypeError("export_onnx needs one example input tensor [N, ...]")
    net = copy.deepcopy(model).cpu().float().eval()
    x = example.detach().cpu().float()
    if dynamic_batch and x.shape[0] == 1:  # torch.export specializes a batch of 1: trace with 2
        x = torch.cat([x, x])
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    kwargs: dict[str, Any] = {
        "dynamo": True,
        "input_names": [INPUT_NAME],
        "external_data": params > EXTERNAL_DATA_BYTES,
        "verbose": False,
        "opset_version": opset,
    }
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
        torch.onnx.export(net, (x,), path, **kwargs)
    result = OnnxExport(
        path=os.path.abspath(path),
        max_abs_diff=float("nan"),
        max_abs_output=float("nan"),
        check_batches=[],
        opset=opset,
        dynamic_batch=dynamic_batch,
    )
    if not check:
        return result
    batches = [example.detach().cpu().float()]
    if dynamic_batch:
        g = torch.Generator().manual_seed(0)
        batches.append(torch.randn((example.shape[0] + 2, *example.shape[1:]), generator=g))
    diff, scale = check_onnx(net, path, batches)
    result.max_abs_diff, result.max_abs_output = diff, scale
    result.check_batches = [int(b.shape[0]) for b in batches]
    if not diff <= atol + rtol * scale:  # also catches NaN
        with contextlib.suppress(OSError):
            os.remove(path)
        raise RuntimeError(
            f"ONNX check failed: onnxruntime differs from PyTorch by {diff:.3g} (outputs up to {scale:.3g}; "
            f"allowed {atol:g} + {rtol:g} * that); {path} was not kept"
        )
    return result


@torch.no_grad()
def check_onnx(model: nn.Module, path: str, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(max |onnxruntime - torch|, max |torch|) over every output of ``model`` on each batch."""
    sess = onnx_session(path)
    name = sess.get_inputs()[0].name
    diffs, scales = [0.0], [0.0]
    model = model.eval()
    for xb in batches:
        want = _outputs(model(xb))
        got = sess.run(None, {name: xb.numpy()})
        if len(got) != len(want):
            raise RuntimeError(f"the ONNX model has {len(got)} outputs, the PyTorch model {len(want)}")
        for w, o in zip(want, got):
            o = torch.from_numpy(o)
            if tuple(o.shape) != tuple(w.shape):
                raise RuntimeError(f"ONNX output shape {tuple(o.shape)} != PyTorch {tuple(w.shape)}")
            diffs.append(float((o.float() - w.float()).abs().max()))
            scales.append(float(w.abs().max()))
    nan = float("nan")
    return (nan if any(math.isnan(d) for d in diffs) else max(diffs)), max(scales)


__all__ = ["ONNX_INSTALL", "OnnxExport", "check_onnx", "export_onnx", "onnx_session", "require_onnx"]
