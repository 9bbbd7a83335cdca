"""benchmarks/mutation_check.py: its deliberate bugs still apply to today's code, and (slow) one of them is
killed by the suite when run through the script."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import mutation_check  # noqa: E402


@pytest.mark.parametrize("mutation", mutation_check.MUTATIONS, ids=lambda m: m.name)
def test_mutation_still_applies(mutation):
    """Each substitution finds its text exactly once: when the code moves on, update the mutation."""
    for file, old, new in mutation.edits:
        assert (ROOT / file).read_text().count(old) == 1, f"{mutation.name}: {file} no longer has {old.strip()!r}"
        assert old != new
    for test in mutation.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test
    mutation_check.module_name(mutation.edits[0][0])  # a file of the package


@pytest.mark.slow
def test_a_mutation_is_killed_through_the_script(tmp_path):
    out = tmp_path / "rows.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mutation_check.py"), "--only", "chex_leverage_all_columns",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1/1 mutations killed" in r.stdout
