"""`make run` prints the comparison table: the Makefile's own `run` recipe is executed (through this Python, with
one epoch in the default suite and unchanged under `make test-all`)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_recipe() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^run:.*\n\t(.+)$", text, re.M)
    assert m, "the Makefile has no `run` recipe"
    words = shlex.split(m.group(1))
    assert words[0] == "$(BIN)/prunekit", words
    return [sys.executable, "-m", "prunekit", *words[1:]]


def check_table(cmd: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}  # a wide terminal: at 80 columns the table folds (tests/test_outputs.py)
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path), "--progress", "plain"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "prunekit compare" in out and "top-1" in out and "MACs red." in out
    for name in ("dense", "chex", "magnitude", "random"):
        assert re.search(rf"│ {name}\s+│\s+\d+\.\d+ │", out), f"no {name} row in:\n{out[-3000:]}"
    assert list(tmp_path.glob("*/comparison.md"))


def test_make_run_recipe_prints_the_comparison_table(tmp_path):
    cmd = run_recipe()
    assert "compare" in cmd and "--dense" in cmd
    check_table([*cmd, "--epochs", "1"], tmp_path)


@pytest.mark.slow
def test_make_run_recipe_unchanged(tmp_path):
    check_table(run_recipe(), tmp_path)
