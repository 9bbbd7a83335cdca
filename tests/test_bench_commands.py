"""`make bench` (benchmarks/run_all.py) regenerates every published page with the command printed in it.

Each docs/results/*.md ends with the command that produced it; run_all.PAGES must hold that command for
every page that is not in run_all.NOT_REGENERATED (written by hand, or the record of an earlier state).
Only how a run is scheduled may differ: ``--jobs N`` and ``--resume`` do not change what is measured.
"""

import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_all  # noqa: E402

# pages whose published run predates the command in run_all (rerun pending; remove once rerun)
RERUN_PENDING: set[str] = set()


def published_command(page: Path) -> str | None:
    m = re.search(r"Command:\s*\n\s*```\n(.+?)\n```", page.read_text())
    return m.group(1).strip() if m else None


def normalized(command: str) -> list[str]:
    words = shlex.split(command)
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("--jobs", "--out"):  # how many at a time and where the pages go do not change them
            skip = True
        elif w != "--resume":
            out.append(w)
    return out


def test_every_page_is_regenerated_or_says_why_not():
    pages = {p.stem for p in RESULTS.glob("*.md")}
    listed = {p.name for p in run_all.PAGES}
    assert listed.isdisjoint(run_all.NOT_REGENERATED)
    assert pages == listed | set(run_all.NOT_REGENERATED), pages ^ (listed | set(run_all.NOT_REGENERATED))


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="rerun pending")) if p.name in RERUN_PENDING else p
        for p in run_all.PAGES
    ],
    ids=lambda p: p.name,
)
def test_run_all_runs_the_published_command(page):
    published = published_command(RESULTS / f"{page.name}.md")
    assert published is not None, f"{page.name}.md has no Command block"
    assert normalized(published) == normalized(page.command)


def test_run_all_lists_the_commands():
    env, argv = run_all.PAGES[-1].argv()
    assert env == {"OMP_NUM_THREADS": "1"} and argv[0] == sys.executable and argv[1].endswith("fmnist_accuracy.py")
    assert run_all.main(["--list"]) == 0
