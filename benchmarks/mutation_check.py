"""Mutation check: does the test suite fail when the code is wrong?

    .venv/bin/python benchmarks/mutation_check.py                  # every mutation, its own tests (~5 min)
    .venv/bin/python benchmarks/mutation_check.py --list           # the mutations and their tests
    .venv/bin/python benchmarks/mutation_check.py --only regrow_half_delta chex_leverage_all_columns
    .venv/bin/python benchmarks/mutation_check.py --baseline       # also run the tests on the unmutated copy

Each mutation is a deliberate bug, written as text substitutions in one or more files. For each one, the
repository is copied to a temporary folder (without .git, .venv and caches), the substitutions are applied
there, and the mutation's tests run in the copy with this venv's python: ``python -m pytest -x -q
-p no:cacheprovider TESTS`` from the copy, with PYTHONPATH pointing at it. The package is installed in
editable mode from the working tree, and its import hook maps ``prunekit.graphs`` and
``prunekit.strategies`` to the working tree's graphs/ and strategies/; the copy therefore gets
``prunekit/graphs`` and ``prunekit/strategies`` links to its own folders (what a regular install lays out),
and before the tests run, a child process checks that every mutated module is imported from the copy.

A mutation is *killed* when pytest reports failing tests, *survived* when they all pass. A substitution whose
text is no longer in the file is *stale* (the code moved on: update the mutation); a copy that cannot
import is *broken*. Exit status 0 when every mutation was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".hypothesis", "runs", "build",
    "*.egg-info",
)  # fmt: skip
# the package's folders in the repository -> the module prefix they are imported as
PACKAGE_DIRS = {"prunekit": "prunekit", "graphs": "prunekit.graphs", "strategies": "prunekit.strategies"}


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the bug, in words
    edits: tuple[tuple[str, str, str], ...]  # (file, old text, new text): old must occur exactly once
    tests: tuple[str, ...]  # pytest arguments (files, or file::test)
    selection: tuple[str, ...] = field(default=())  # extra pytest arguments (e.g. -k EXPR)


MUTATIONS = [
    Mutation(
        "harness_no_optimizer_step",
        "the training loop never steps the optimizer (the model does not learn)",
        (("prunekit/trainer.py", "scaler.step(optimizer)", "pass  # mutation: no optimizer step"),),
        ("tests/test_learning.py",),
    ),
    Mutation(
        "chex_leverage_all_columns",
        "CSS scores the columns with all C right singular vectors instead of the top k",
        (("strategies/chex.py", "lev = leverage_scores(w, keep)", "lev = leverage_scores(w, w.shape[1])"),),
        ("tests/test_chex_pins.py", "tests/test_chex.py"),
    ),
    Mutation(
        "chex_leverage_no_rank_cutoff",
        "leverage scores use k singular vectors even when the rank is below k (null-space directions count)",
        (("strategies/chex.py", "v = evecs[:, : min(k, rank)]", "v = evecs[:, :k]"),),
        ("tests/test_chex_pins.py", "tests/test_chex.py"),
    ),
    Mutation(
        "regrow_half_delta",
        "an exploration step regrows up to allocate(S - delta_t / 2) instead of allocate(S - delta_t)",
        (("prunekit/controller.py", "s_prune - delta)", "s_prune - delta / 2)"),),
        ("tests/test_chex_pins.py", "tests/test_chex.py", "tests/test_controller.py"),
    ),
    Mutation(
        "shapes_all_decline",
        "every shape formula declines (returns NotImplemented), so the meta recording never uses one",
        (
            (
                "graphs/shapes.py",
                "def module(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:\n",
                "def module(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:\n"
                "    return NI  # mutation\n\n\ndef _unused_module(mod, args, kwargs):\n",
            ),
            (
                "graphs/shapes.py",
                "def function(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:\n",
                "def function(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:\n"
                "    return NI  # mutation\n\n\ndef _unused_function(fn, args, kwargs):\n",
            ),
        ),
        ("tests/test_graph_shapes.py",),
    ),
    Mutation(
        "zoo_check_not_randomized",
        "the equivalence check runs on the model as initialized (BN near identity, 1e-6 layer scales)",
        (
            (
                "prunekit/testing.py",
                "model = randomize_parameters(copy.deepcopy(model), seed)",
                "pass  # mutation: no randomization",
            ),
        ),
        ("tests/test_graph_zoo.py",),
        ("-k", "slim_matches_masked"),
    ),
]


def copy_tree(dest: Path) -> None:
    shutil.copytree(ROOT, dest, ignore=IGNORE, symlinks=True)
    for folder, module in PACKAGE_DIRS.items():
        if "." in module:  # prunekit.graphs -> prunekit/graphs -> ../graphs
            link = dest / Path(*module.split("."))
            if not link.exists():
                link.symlink_to(Path("..") / folder, target_is_directory=True)


def apply(copy: Path, mutation: Mutation) -> str | None:
    """Apply the substitutions in the copy; the reason if one cannot be applied."""
    for file, old, new in mutation.edits:
        path = copy / file
        text = path.read_text()
        n = text.count(old)
        if n != 1:
            return f"{file}: the text to replace occurs {n} times (expected once): {old.strip()[:60]!r}"
        path.write_text(text.replace(old, new))
    return None


def module_name(file: str) -> str:
    folder, _, rest = file.partition("/")
    return PACKAGE_DIRS[folder] + "." + rest.removesuffix(".py").replace("/", ".")


def env_for(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def imports_from_copy(copy: Path, mutation: Mutation) -> str | None:
    """None when prunekit and every mutated module load from the copy; else what loads from where."""
    modules = ["prunekit", *sorted({module_name(f) for f, _, _ in mutation.edits})]
    code = (
        "import importlib, json, sys\n"
        f"print(json.dumps({{m: importlib.import_module(m).__file__ for m in {modules!r}}}))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env_for(copy), capture_output=True, text=True)
    if r.returncode != 0:
        return f"import failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    files = json.loads(r.stdout)
    wrong = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(copy.resolve())}
    return f"imported from outside the copy: {wrong}" if wrong else None


def run_tests(copy: Path, mutation: Mutation, timeout: int) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests, *mutation.selection]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out", time.perf_counter() - t0
    out = (r.stdout + r.stderr).strip().splitlines()
    failed = [line for line in out if line.startswith("FAILED ") or line.startswith("ERROR ")]
    summary = (failed[0] if failed else "") + (" | " if failed else "") + (out[-1] if out else "")
    return r.returncode, summary, time.perf_counter() - t0


def check(mutation: Mutation | None, timeout: int, baseline_of: Mutation | None = None) -> dict:
    """Run one mutation (or, with ``mutation=None``, the unmutated tests of ``baseline_of``)."""
    target = mutation or baseline_of
    assert target is not None
    row = {"mutation": mutation.name if mutation else f"baseline ({target.name})", "tests": list(target.tests)}
    with tempfile.TemporaryDirectory(prefix="prunekit-mutant-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(copy)
        if mutation is not None:
            reason = apply(copy, mutation)
            if reason:
                return {**row, "result": "stale", "detail": reason, "seconds": 0.0}
        reason = imports_from_copy(copy, target)
        if reason:
            return {**row, "result": "broken", "detail": reason, "seconds": 0.0}
        rc, summary, secs = run_tests(copy, target, timeout)
    if mutation is None:
        result = "passes" if rc == 0 else "FAILS"
    else:
        result = {0: "SURVIVED", 1: "killed"}.get(rc, "broken" if rc != -1 else "timed out")
    return {**row, "result": result, "detail": summary, "seconds": round(secs, 1), "pytest_exit": rc}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [m.name for m in MUTATIONS]
    ap.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"only these mutations: {names}")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--baseline", action="store_true", help="first run each mutation's tests unmutated")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:30s} {m.what}\n{'':30s} tests: {' '.join(m.tests + m.selection)}")
        return 0
    rows = []
    for m in chosen:
        for mut in ([None] if args.baseline else []) + [m]:
            row = check(mut, args.timeout, baseline_of=m)
            rows.append(row)
            print(f"{row['mutation']:32s} {row['result']:9s} {row['seconds']:6.1f}s  {row['detail']}", flush=True)
    killed = sum(r["result"] == "killed" for r in rows)
    print(f"\n{killed}/{len(chosen)} mutations killed")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    bad_baseline = any(r["result"] == "FAILS" for r in rows)
    return 0 if killed == len(chosen) and not bad_baseline else 1


if __name__ == "__main__":
    sys.exit(main())
