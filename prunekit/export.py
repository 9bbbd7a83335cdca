"""Export a run: the slimmed model of a run directory's last checkpoint as a pruning plan, LOAD.md and
optionally TorchScript (``prunekit export``).

    paths = export_run("runs/chex-digits-resnet20-...")   # {"plan": ..., "instructions": ...[, "torchscript"]}
    model = prunekit.load_pruned(paths["plan"])
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from . import checkpoint as ckpt
from .evaluation import logits
from .models import build_model, resolve_leaf_modules
from .plan import is_trusted_factory
from .rundir import MODEL_FACTORY, check_run_model, load_config_of


def unfinished(run_dir: str, epoch: int, epochs: int) -> str:
    """What to tell the user about the export of a run stopped after ``epoch`` of ``epochs`` epochs."""
    return (
        f"UNFINISHED: {run_dir} stopped after epoch {epoch} of {epochs}, so the exported model is not at its "
        f"budget yet (nor fully trained); finish it with `prunekit run --resume {run_dir}` and export again"
    )


def run_progress(run_dir: str) -> tuple[int, int] | None:
    """(epochs done by the last checkpoint, epochs of the run) of ``run_dir`` from its checkpoint.json and
    config.yaml; None when either is missing."""
    try:
        with open(os.path.join(run_dir, ckpt.CHECKPOINT_INFO)) as f:
            epoch = int(json.load(f).get("epoch", 0))
        return epoch, load_config_of(run_dir).train.epochs
    except (OSError, ValueError):
        return None


def export_run(
    run_dir: str,
    out: str | None = None,
    torchscript: bool = False,
    trust_checkpoint: bool = False,
    trusted_factories: Iterable[str] = (),
    onnx: bool = False,
    plan_json: str | None = None,
) -> dict[str, str]:
    """Slim the model of ``run_dir``'s last checkpoint with its masks and write it as a pruning plan
    (``prunekit.load_pruned(path)`` rebuilds it), plus LOAD.md and optionally a TorchScript file.
    Returns {kind: path}. The plan is loaded back and checked against the slimmed model.

    ``onnx``: also write the slimmed model as ONNX beside the plan (``pk.export_onnx``: checked with
    onnxruntime; the max abs difference to PyTorch is returned as ``"onnx_max_abs_diff"``; needs
    ``pip install 'prunekit[onnx]'``). ``plan_json``: also write the readable JSON plan there
    (``pk.save_plan``) and the slimmed weights beside it (``<plan>.weights.pt``), both checked with
    ``pk.load_plan``.

    The run directory is read as data, as in ``run(resume=...)``: ``trusted_factories`` and
    ``trust_checkpoint`` (which runs the code pickled in the checkpoint) mean the same there."""
    import prunekit as pk

    if onnx:
        from .onnx_export import require_onnx

        require_onnx()  # before any work: one line naming the extra to install
    trusted_factories = list(trusted_factories)
    blob = ckpt.load_checkpoint(run_dir, trust=trust_checkpoint)
    if not trust_checkpoint:
        check_run_model(blob["model_spec"], run_dir, trusted_factories)
    spec = dict(blob["model_spec"])
    name = spec.pop("name")
    inputs = blob.get("input") or _recorded_input(run_dir)  # how the run made its inputs (None: not recorded)
    model = build_model(name, **spec)
    model.load_state_dict(blob["model"])
    model.eval()
    example = torch.zeros(1, spec["in_channels"], spec["input_size"], spec["input_size"])
    leaf_modules = resolve_leaf_modules(model, load_config_of(run_dir).model.leaf_modules)  # same graph as the run
    graph = pk.build_graph(model, example, leaf_modules=leaf_modules)
    keep = blob.get("keep") or graph.full_keep()
    small = pk.slim(model, graph, keep).eval()
    out = out or os.path.join(run_dir, "export", "model_pruned.pt")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    pk.save_pruned(
        out, small, graph, keep, factory=MODEL_FACTORY, factory_kwargs=blob["model_spec"], input_spec=inputs
    )
    again = pk.load_pruned(out, trusted_factories=[*trusted_factories, name]).eval()
    with torch.no_grad():
        x = torch.randn(4, *example.shape[1:])
        diff = float((logits(again(x)) - logits(small(x))).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"export check failed: the reloaded plan differs from the slimmed model by {diff:.3g}")
    paths = {"plan": os.path.abspath(out)}
    if torchscript:
        ts = os.path.splitext(out)[0] + ".torchscript.pt"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's deprecation notice of TorchScript
            torch.jit.trace(small, example).save(ts)
        paths["torchscript"] = os.path.abspath(ts)
    onnx_diff = None
    if onnx:
        x = torch.randn(2, *example.shape[1:], generator=torch.Generator().manual_seed(0))
        report = pk.export_onnx(small, x, os.path.splitext(out)[0] + ".onnx")
        paths["onnx"] = report.path
        onnx_diff = report.max_abs_diff
        paths["onnx_max_abs_diff"] = f"{onnx_diff:.3g} (onnxruntime vs PyTorch, batches {report.check_batches})"
    if plan_json:
        args = (plan_json, model, small, graph, keep, blob["model_spec"], inputs, name, trusted_factories)
        paths.update(_write_plan_json(*args))
    cfg = load_config_of(run_dir)
    done = "finished" if blob["epoch"] >= cfg.train.epochs else unfinished(run_dir, blob["epoch"], cfg.train.epochs)
    kept = sum(int(torch.as_tensor(v).sum()) for v in keep.values())
    trust = f", trusted_factories=[{name!r}]" if ":" in name and not is_trusted_factory(name) else ""
    total = sum(g.size for g in graph.groups)
    text = f"""# Exported pruned model

From run `{os.path.abspath(run_dir)}` ({done}); model `{name}` {spec}; {kept}/{total} prunable channels kept;
{pk.count_params(small):,} parameters, {pk.count_macs(small, example):,} MACs per sample.

`{os.path.basename(out)}` is a *pruning plan*: the architecture's factory and arguments, the keep masks
and the slimmed weights. Loading rebuilds the dense architecture, slims it with the masks and loads
the weights:

```python
import torch
import prunekit
model = prunekit.load_pruned("{os.path.abspath(out)}"{trust})   # an nn.Module with the channels removed
model.eval()
{_feeding(inputs, spec)}
logits = model(x)
```

{_inputs_text(inputs, run_dir)}
"""
    if torchscript:
        text += f"""
TorchScript (no prunekit needed): `torch.jit.load("{paths["torchscript"]}")`.
"""
    if onnx:
        text += _onnx_text(paths["onnx"], onnx_diff, inputs, spec)
    if plan_json:
        text += _plan_text(paths["plan_json"], paths["plan_weights"], name, trust)
    md = os.path.join(os.path.dirname(os.path.abspath(out)), "LOAD.md")
    ckpt.write_text(md, text)
    paths["instructions"] = md
    return paths


def _recorded_input(run_dir: str) -> dict[str, Any] | None:
    """The input spec in ``run_dir``'s result.json (runs whose checkpoint predates it), or None."""
    try:
        with open(os.path.join(run_dir, "result.json")) as f:
            return json.load(f).get("input") or None
    except (OSError, ValueError):
        return None


def _feeding(inputs: dict[str, Any] | None, spec: dict[str, Any]) -> str:
    """The lines of LOAD.md's example that make ``x`` from images."""
    shape = f"[N, {spec['in_channels']}, {spec['input_size']}, {spec['input_size']}]"
    if not inputs:
        return f"# x: {shape}, normalized as in training (this run did not record how: see below)"
    return (
        f"# images: float32 {shape}, {inputs['scale']}\n"
        f"mean = torch.tensor({inputs['mean']}).view(1, -1, 1, 1)\n"
        f"std = torch.tensor({inputs['std']}).view(1, -1, 1, 1)\n"
        "x = (images - mean) / std"
    )


def _inputs_text(inputs: dict[str, Any] | None, run_dir: str) -> str:
    """LOAD.md's section on the inputs the model expects."""
    if not inputs:
        return (
            "## Inputs\n\nThis run was made by a prunekit that did not record its input normalization; feed the "
            f"model inputs made as in its training (the dataset in `{os.path.join(run_dir, 'config.yaml')}`)."
        )
    colours = f", channels {inputs['channels']}" if inputs.get("channels") else ""
    lines = [
        "## Inputs",
        "",
        "Made as in training (also in the plan file, `torch.load(path, weights_only=True)[\"input\"]`, and in the "
        "run's result.json):",
        "",
        f"- shape of one sample: {inputs['shape']} (channels, height, width){colours}",
        f"- scaling: {inputs['scale']}",
        f"- resize: {inputs['resize'] or 'none (the size of the dataset)'}",
        f"- normalization: {inputs['normalize']}, mean {inputs['mean']}, std {inputs['std']}",
    ]
    return "\n".join(lines)


def _write_plan_json(
    path: str,
    model: Any,
    small: Any,
    graph: Any,
    keep: dict[str, Any],
    model_spec: dict[str, Any],
    inputs: dict[str, Any] | None,
    name: str,
    trusted_factories: list[str],
) -> dict[str, str]:
    """The JSON plan at ``path`` and the slimmed weights beside it, loaded back and checked."""
    import prunekit as pk

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    weights = (path[: -len(".json")] if path.endswith(".json") else path) + ".weights.pt"
    # check=False: the factory is build_model, which the checkpoint's model came from a moment ago
    pk.save_plan(
        path, model, graph, keep, factory=MODEL_FACTORY, factory_kwargs=model_spec, input_spec=inputs, check=False
    )
    state = small.state_dict()
    ckpt.atomic_write(weights, lambda tmp: torch.save(state, tmp))
    again = pk.load_plan(path, state_dict=weights, trusted_factories=[*trusted_factories, name])
    with torch.no_grad():
        x = torch.randn(4, model_spec["in_channels"], model_spec["input_size"], model_spec["input_size"])
        diff = float((logits(again(x)) - logits(small(x))).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"export check failed: the JSON plan replayed differs from the slimmed model by {diff:.3g}")
    return {"plan_json": os.path.abspath(path), "plan_weights": os.path.abspath(weights)}


def _onnx_text(path: str, diff: float | None, inputs: dict[str, Any] | None, spec: dict[str, Any]) -> str:
    """LOAD.md's section on running the ONNX file."""
    shape = f"[N, {spec['in_channels']}, {spec['input_size']}, {spec['input_size']}]"
    prep = (
        f"mean = np.array({inputs['mean']}, dtype=np.float32).reshape(1, -1, 1, 1)\n"
        f"std = np.array({inputs['std']}, dtype=np.float32).reshape(1, -1, 1, 1)\n"
        f"x = (images - mean) / std          # images: float32 {shape}, {inputs['scale']}"
        if inputs
        else f"x = images                          # float32 {shape}, normalized as in training"
    )
    return f"""
## ONNX

`{os.path.basename(path)}`: the same slimmed model as ONNX (input `input`, float32 {shape}, any batch size N),
checked with onnxruntime against PyTorch: max abs difference {diff:.3g}. Runs without torch or prunekit
(`pip install onnxruntime numpy`):

```python
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession("{path}", providers=["CPUExecutionProvider"])
{prep}
logits = sess.run(None, {{"input": x.astype(np.float32)}})[0]
```
"""


def _plan_text(plan: str, weights: str, name: str, trust: str) -> str:
    """LOAD.md's section on the JSON plan."""
    return f"""
## JSON plan

`{os.path.basename(plan)}` is the readable form of the plan: the model factory and its arguments, the kept
channel indices of every group (with the modules and dims they live in), and the recipe that replays them
(kept indices per tensor, changed module attributes), versioned. `{os.path.basename(weights)}` holds the slimmed
weights. Replay it onto a fresh model of the original class, in any process:

```python
import torch
import prunekit
model = prunekit.load_plan("{plan}", state_dict="{weights}"{trust})
# or onto your own instance of the dense architecture (the weights may be the dense or the slimmed ones):
#   model = prunekit.load_plan("{plan}", model=dense_model, state_dict=torch.load(...))
```
"""
