"""Running the real CLI in a subprocess, for the tests that go through ``python -m prunekit``."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_prunekit(
    *args: str, cwd: str | os.PathLike = ROOT, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m prunekit ARGS`` in ``cwd`` with this checkout on PYTHONPATH (and ``env`` added): its exit
    status, stdout and stderr as text."""
    e = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "prunekit", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )
