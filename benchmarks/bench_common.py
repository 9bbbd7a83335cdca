"""What every benchmark script records beside its figures: the machine and versions, and the exact command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU, cores, torch threads (``threads`` or torch's current number), GPU, platform and versions."""
    import torch
    import torchvision

    import prunekit

    try:
        import torch_pruning as tp

        tp_version = getattr(tp, "__version__", "?")
    except ImportError:
        tp_version = None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "load_1min_at_start": load_avg(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_pruning": tp_version,
        "prunekit": prunekit.__version__,
    }


def command_line(script: str, argv: list[str] | None = None) -> str:
    """The command that reproduces this run, from the repository root (OMP_NUM_THREADS included if set)."""
    omp = os.environ.get("OMP_NUM_THREADS")
    args = sys.argv[1:] if argv is None else argv
    env = [f"OMP_NUM_THREADS={omp}"] if omp else []
    return " ".join([*env, ".venv/bin/python", f"benchmarks/{script}", *map(shlex.quote, args)])


def command_block(command: str) -> list[str]:
    """The closing lines of a result page: the command that produced it, as a code block."""
    return ["Command:", "", "```", command, "```", ""]


def save_page(out: Path, name: str, data: dict[str, Any], write_markdown: Callable[[Path, dict], None],
              indent: int = 2) -> None:  # fmt: skip
    """Write ``out/name.json`` (the figures) and ``out/name.md`` (the page ``write_markdown`` renders)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=indent) + "\n")
    write_markdown(out / f"{name}.md", data)
    print(f"wrote {out / name}.md and .json")
