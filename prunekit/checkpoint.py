"""Atomic files for run directories: checkpoints (torch), JSON, CSV and text, each written to a
temporary file in the same folder and moved into place with ``os.replace``, so a reader (or a run
killed mid-write) never sees a half-written file.

Checkpoints hold the complete training state (model, optimizer, scheduler, grad scaler, controller:
masks, MRU values, step, strategy state and RNG; the global RNG states; the position in the epoch;
the metrics so far). They are trusted files written by prunekit and are loaded with
``weights_only=False`` (they carry RNG states as Python objects).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temporary file to ``path`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, w)


def jsonable(obj: Any) -> Any:
    """``obj`` with tensors, numpy values, tuples and sets turned into JSON types."""
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.dim() == 0 else obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


def write_json(path: str, data: Any) -> None:
    write_text(path, json.dumps(jsonable(data), indent=2) + "\n")


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: jsonable(v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def rng_state() -> dict[str, Any]:
    """The global RNG states: torch CPU, every CUDA device, numpy, Python's random."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(run_dir: str, state: dict[str, Any]) -> str:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically, then a small ``checkpoint.json`` beside it
    (epoch, batch, step) that tools and tests can poll without unpickling."""
    path = os.path.join(run_dir, CHECKPOINT)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    info = {k: state[k] for k in ("epoch", "batch", "step") if k in state}
    write_json(os.path.join(run_dir, CHECKPOINT_INFO), info)
    return path


def load_checkpoint(run_dir: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no checkpoint in {run_dir} ({CHECKPOINT} missing): was it written by `prunekit run`, and did "
            "the run get through at least one checkpoint?"
        )
    return torch.load(path, map_location=map_location, weights_only=False)


__all__ = [
    "atomic_write",
    "jsonable",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_csv",
    "write_json",
    "write_text",
]
