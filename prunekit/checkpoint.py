"""Atomic files for run directories: checkpoints (torch), JSON, CSV and text, each written to a
temporary file in the same folder and moved into place with ``os.replace``, so a reader (or a run
killed mid-write) never sees a half-written file.

Checkpoints hold the complete training state (model, optimizer, scheduler, grad scaler, controller:
masks, MRU values, step, strategy state and RNG; the global RNG states; the position in the epoch;
the metrics so far). Everything in them is tensors and plain data, so they load with
``weights_only=True``: opening a run directory someone sent never unpickles (runs) arbitrary objects.
Checkpoints of the first format (older prunekit: RNG states as pickled numpy/Python objects) and
anything else that needs the full unpickler load only with ``trust=True`` (CLI ``--trust-checkpoint``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import random
import re
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"
FORMAT = "prunekit-checkpoint/2"  # tensors and plain data only
OLD_FORMATS = ("prunekit-checkpoint/1",)  # pickled RNG objects: loaded only when trusted


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0o666 less the process's umask."""
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temporary file to ``path`` atomically. The file gets the
    user's umask like any other (``tempfile.mkstemp`` alone would make it 0600)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
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
    """The global RNG states (torch CPU, every CUDA device, numpy, Python's random) as tensors and plain
    data, so that a checkpoint holding them loads with ``weights_only=True``."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # ("MT19937", uint32[624], int, int, float)
    version, internal, gauss_next = random.getstate()  # (3, 625 ints, float | None)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()`` (or the Python objects that checkpoints of the first format hold)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    if isinstance(npst, dict):
        npst = ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    np.random.set_state(npst)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(run_dir: str, state: dict[str, Any]) -> str:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically, then a small ``checkpoint.json`` beside it
    (epoch, batch, step) that tools and tests can poll without unpickling."""
    path = os.path.join(run_dir, CHECKPOINT)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    info = {k: state[k] for k in ("format", "epoch", "batch", "step") if k in state}
    write_json(os.path.join(run_dir, CHECKPOINT_INFO), info)
    return path


def load_checkpoint(run_dir: str, map_location: str | torch.device = "cpu", trust: bool = False) -> dict[str, Any]:
    """The checkpoint of ``run_dir``, read with ``weights_only=True``. ``trust=True`` uses the full
    unpickler instead, which runs whatever code the file names: only for checkpoints you wrote yourself
    (the first format needs it). Raises ValueError (one line) for a file that is unsafe or not a checkpoint."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no checkpoint in {run_dir} ({CHECKPOINT} missing): was it written by `prunekit run`, and did "
            "the run get through at least one checkpoint?"
        )
    try:
        blob = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = found.group(1) if found else "not tensors or plain data"
        raise ValueError(
            f"{path} holds pickled Python objects ({what}) that loading would run: it was written by an older "
            "prunekit (checkpoint format 1), or crafted. If you wrote it yourself, pass --trust-checkpoint "
            "(Python: trust_checkpoint=True), which runs the code pickled in it"
        ) from None
    except (RuntimeError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else repr(e)
        raise ValueError(f"{path} cannot be read as a checkpoint: {first}") from None
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt != FORMAT and not (trust and fmt in OLD_FORMATS):
        raise ValueError(f"{path} is not a prunekit checkpoint of format {FORMAT!r} (found {fmt!r})")
    return blob


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
