"""Every code block and command of README.md and docs/*.md runs as documented, so the docs cannot drift.

How each fenced block is checked:

- ```python: run in a subprocess, in a temporary directory; the python blocks of one page run in order in one
  namespace (a later block may use an earlier one's names). A block whose first line is ``# NAME.py`` is also
  written to that file, so ``--plugins NAME`` and ``import NAME`` find it, as the page says.
- shell blocks (``` or ```bash): every ``prunekit ...`` line runs through the real CLI
  (``python -m prunekit``) in that page's directory, one after the other. Placeholders are filled in: a run
  directory (``runs/<run>``, ``RUN_DIR``, ``RUN_OR_COMPARE_DIR``) is a finished one-epoch run, the directory
  after ``--resume`` is a run killed after its first checkpoint; ``[--opt x]`` is included, ``[a|b]`` runs each
  alternative, ``[...]`` and a bare ``...`` are dropped. Commands that train (``run``, ``compare``) get CHEAP
  appended: one epoch on 256 images (options docs/cli.md documents; the test checks that it does).
- ```yaml: the file that the ``prunekit ... --config NAME.yaml`` command quoted just before it reads; that
  command runs with it.
- ```toml declaring ``prunekit.strategies`` entry points: stands in for ``pip install -e .`` (the module and
  its dist-info on PYTHONPATH) for the page's later shell blocks.
- Anything else (pseudo-code, commands that need CIFAR-10's files, several processes or run the suite itself)
  is skipped only through SKIP_BLOCKS / SKIP_COMMANDS below, each with its reason; ``pytest -rs`` lists them.

Each command must exit 0 without a traceback; EXPECT holds what a few of them must print (what the page's
comment says they print). docs/results/*.md are benchmark pages: their commands are checked by
tests/test_bench_commands.py. The default set is about 3 minutes of CPU, one process at a time; the commands
in SLOW (several training runs, or a fuller form of the same command runs by default) wait for `make test-all`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console"}
TIMEOUT = 600

# documented options (docs/cli.md) that make a training command cheap: one epoch on 256 digits
CHEAP = ["--epochs", "1", "--set", "data.limit_train=256", "--set", "data.limit_test=128",
         "--set", "run.latency_runs=2"]  # fmt: skip

# (page, start of the block's first line) -> why the block is not run
SKIP_BLOCKS = {
    ("docs/strategies.md", "class Strategy:"): "pseudo-code: the interface's signatures (`Param(type, default, min=, "
    "...)`); tests/test_strategy_interface.py exercises the interface itself",
    ("docs/cli.md", "parallel --jobs 4"): "needs GNU parallel; tests/test_sweep.py runs the emitted commands",
    ("docs/cli.md", "#!/bin/bash"): "a Slurm batch script; tests/test_sweep.py runs the emitted commands",
    ("docs/cli.md", "# node 0 (10.0.0.1)"): "two machines; tests/test_ddp_multinode.py runs two local nodes",
}
# a command matching the pattern -> why it is not run
SKIP_COMMANDS = {
    r"^make run$": "the default job (4 runs of 10 epochs); tests/test_make_run.py runs the Makefile's recipe",
    r"^make test$": "runs the test suite itself",
    r"cifar10_resnet56_chex\.yaml": "needs CIFAR-10's files (prunekit never downloads them); tests/test_configs.py "
    "runs this config on a stand-in CIFAR-10 folder",
    r"^prunekit (run|compare)\b.*--dataset cifar10": "trains on CIFAR-10, whose files prunekit never downloads",
    r"--nproc": "DDP: several torchrun processes; tests/test_ddp.py runs it",
}
# a command matching the pattern is marked slow (`make test-all` runs it), to keep this file near 3 minutes of
# CPU: the default set still runs every other kind of command (one process each, about 5 s of start-up)
SLOW = {
    r"^prunekit compare\b": "several training runs in one command",
    r"^prunekit export runs/<run> --onnx": "the ONNX export docs/cli.md documents runs by default",
    r"^prunekit list models$": "`prunekit list` and `list strategies|datasets|keys` run by default",
    r"^prunekit run --strategy filter_bn --macs": "the entry-point stand-in is checked by default by `list strategies`",
    r"^prunekit export runs/<run>$": "docs/cli.md's `export RUN_DIR --out ... --torchscript` runs by default",
    r"^prunekit graph --model resnet56 --dataset cifar10$": "docs/cli.md's form with --members --json --dot runs by "
    "default",
}
# (page, command with its [options] filled in) -> strings its output must contain
EXPECT = {
    ("README.md", "prunekit list"): ["strategies: none (dense), chex, magnitude, random", "models: ", "datasets: "],
    ("README.md", "prunekit list strategies"): ["chex: ", "delta_0 = 0.3", "magnitude: ", "norm = 'l1'", "random: "],
    ("docs/custom-strategy.md", "prunekit list strategies --plugins my_strategies"): [
        "filter_bn: Keep the channels with", "use_bn = True"],
    ("docs/custom-strategy.md", "prunekit list strategies"): ["filter_bn: Keep the channels with", "use_bn = True"],
    ("docs/cli.md", "prunekit graph --model resnet56 --dataset cifar10 --members --json g.json --dot g.dot"): [
        "prunable"],
}  # fmt: skip


@dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first(self) -> str:
        return next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")

    @property
    def file_name(self) -> str | None:
        """``NAME.py`` when the block's first line is the comment ``# NAME.py``."""
        m = re.fullmatch(r"#\s*([\w.]+\.py)", self.first)
        return m.group(1) if m else None


def blocks(path: Path) -> list[Block]:
    out, lang, start, buf = [], None, 0, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if lang is None and line.startswith("```"):
            lang, start, buf = line[3:].strip().lower(), n, []
        elif lang is not None and line.startswith("```"):
            out.append(Block(str(path.relative_to(ROOT)), start, lang, "\n".join(buf) + "\n"))
            lang = None
        elif lang is not None:
            buf.append(line)
    assert lang is None, f"{path.name}: unclosed code block at line {start}"
    return out


ALL = [b for p in PAGES for b in blocks(p)]


def skip_reason(block: Block) -> str | None:
    return next((why for (page, first), why in SKIP_BLOCKS.items() if page == block.page
                 and block.first.startswith(first)), None)  # fmt: skip


# ---------------------------------------------------------------------------------------------- commands


def command_lines(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [" ".join(shlex.split(ln, comments=True)) for ln in joined.splitlines() if shlex.split(ln, comments=True)]


def expand(cmd: str) -> list[list[str]]:
    """Concrete argument lists for a documented command: ``[--opt x]`` included, ``[a|b]`` one command per
    alternative, ``[...]`` and ``...`` dropped."""
    words = shlex.split(cmd)
    variants: list[list[str]] = [[]]
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("...", "[...]"):
            i += 1
            continue
        if w.startswith("["):
            j = i
            while not words[j].endswith("]"):
                j += 1
            inner = " ".join(words[i : j + 1])[1:-1]
            alts = inner.split("|") if "|" in inner and " " not in inner else [inner]
            variants = [v + shlex.split(a) for v in variants for a in alts]
            i = j + 1
            continue
        variants = [v + [w] for v in variants]
        i += 1
    return variants


def command_skip(cmd: str) -> str | None:
    return next((why for pat, why in SKIP_COMMANDS.items() if re.search(pat, cmd)), None)


def trains(argv: list[str]) -> bool:
    return argv[1] in ("run", "compare") and "--resume" not in argv


def env_for(site: Path | None) -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg")
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "prunekit", *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    tail = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}{tail}"
    assert "Traceback" not in proc.stderr, f"{what}: traceback{tail}"
    return proc


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch chex run (the stand-in for ``runs/<run>``, ``RUN_DIR``, ...)."""
    out = tmp_path_factory.mktemp("finished")
    argv = ["prunekit", "run", "--strategy", "chex", *CHEAP, "--out", str(out), "--name", "run"]
    run_cli(argv, out, env_for(None), "the finished run the placeholders stand for")
    return out / "run"


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run killed (SIGKILL) right after its first checkpoint: what ``--resume DIR`` continues."""
    out = tmp_path_factory.mktemp("interrupted")
    cmd = [sys.executable, "-m", "prunekit", "run", "--strategy", "chex", *CHEAP, "--epochs", "2",
           "--batch-size", "16", "--set", "run.checkpoint_steps=1", "--progress", "off", "--out", str(out),
           "--name", "run"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt, deadline = out / "run" / "checkpoint.pt", time.monotonic() + TIMEOUT
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1]
    assert alive and ckpt.exists(), f"the run ended before it could be interrupted (exit {proc.returncode}): {err}"
    return out / "run"


@pytest.fixture(scope="module")
def interrupted_compare(tmp_path_factory) -> Path:
    """A comparison whose second strategy never ran (its run directory gone): what ``compare --resume`` finishes."""
    out = tmp_path_factory.mktemp("compare")
    argv = ["prunekit", "compare", "--strategies", "magnitude,random", *CHEAP, "--progress", "off", "--out",
            str(out), "--name", "cmp"]  # fmt: skip
    run_cli(argv, out, env_for(None), "the interrupted comparison runs/<compare> stands for")
    shutil.rmtree(out / "cmp" / "random")
    return out / "cmp"


# ---------------------------------------------------------------------------------------------- page setup


def prepare(page: str, upto: int, work: Path) -> Path | None:
    """Write the page's ``# NAME.py`` blocks into ``work`` and, when a ```toml block with entry points comes
    before line ``upto``, install it as a stand-in package; returns the stand-in's site folder, if any."""
    page_blocks = [b for b in ALL if b.page == page]
    files = {b.file_name: b.text for b in page_blocks if b.lang == "python" and b.file_name}
    for name, text in files.items():
        (work / name).write_text(text)
    site = None
    for b in page_blocks:
        if b.lang == "toml" and b.line < upto:
            site = install_stand_in(b, files, work / "site")
    return site


def install_stand_in(block: Block, files: dict[str, str], site: Path) -> Path:
    """What ``pip install -e .`` of the block's pyproject.toml gives: each entry point's module, holding the
    page's class of that name, and a dist-info with the entry points."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    meta = tomllib.loads(block.text)
    project = meta["project"]
    groups = project.get("entry-points", {})
    assert "prunekit.strategies" in groups, f"{block.id}: no prunekit.strategies entry points"
    for target in groups["prunekit.strategies"].values():
        module, _, cls = target.partition(":")
        source = next((t for t in files.values() if re.search(rf"^class {cls}\b", t, re.M)), None)
        assert source is not None, f"{block.id}: no `# NAME.py` block of the page defines class {cls}"
        parts = module.split(".")
        for i in range(1, len(parts)):
            pkg = site.joinpath(*parts[:i])
            pkg.mkdir(parents=True, exist_ok=True)
            (pkg / "__init__.py").touch()
        site.joinpath(*parts[:-1]).mkdir(parents=True, exist_ok=True)
        site.joinpath(*parts[:-1], parts[-1] + ".py").write_text(source)
    dist = re.sub(r"[-_.]+", "_", project["name"])
    info = site / f"{dist}-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in groups.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


def fill(argv: list[str], work: Path, fixture: Callable[[str], Path]) -> list[str]:
    """Replace the placeholders for run directories and output folders by real paths under ``work``
    (``fixture(name)`` gives the run a placeholder stands for)."""
    out = []
    for i, w in enumerate(argv):
        prev = argv[i - 1] if i else ""
        run_like = w in ("RUN_DIR", "RUN_OR_COMPARE_DIR") or re.fullmatch(r"runs/(<\w+>|[\w.-]+-\d{8}-\d{6})", w)
        if prev == "--resume" and w == "runs/<compare>":
            dst = work / "runs" / f"compare-{i}"
            shutil.copytree(fixture("interrupted_compare"), dst)
            w = str(dst)
        elif prev == "--resume" and run_like:
            dst = work / "runs" / f"interrupted-{i}"
            shutil.copytree(fixture("interrupted_run"), dst)
            w = str(dst)
        elif run_like:
            dst = work / "runs" / f"finished-{i}"
            if not dst.exists():
                shutil.copytree(fixture("finished_run"), dst)
            w = str(dst)
        elif w == "DIR" and prev == "--out":
            w = str(work / "out")
        elif re.fullmatch(r"[A-Z][A-Z_]+|<[\w-]+>", w):
            pytest.fail(f"unknown placeholder {w!r} in {' '.join(argv)}: teach fill() what it stands for")
        out.append(w)
    return out


# ---------------------------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One command to run: a line of a shell block (one alternative of it), or a yaml block's command."""

    block: Block
    cmd: str  # as the page writes it
    shown: list[str]  # with its [options] filled in, before the placeholders
    yaml_name: str | None = None  # a yaml block: the file name the command reads
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.block.id} {' '.join(self.shown)}"


def yaml_command(block: Block) -> tuple[str, str]:
    """The ``prunekit ... --config NAME.yaml`` command quoted last before a yaml block, and NAME.yaml."""
    before = "\n".join((ROOT / block.page).read_text().splitlines()[: block.line - 1])
    found = re.findall(r"`(prunekit [^`]*--config ([\w./-]+\.ya?ml)[^`]*)`", before)
    assert found, f"{block.id}: no `prunekit ... --config NAME.yaml` before the block says how it is used"
    return found[-1]


def page_env(block: Block) -> tuple:
    """What a command's outcome depends on besides its words: the page's files and stand-in packages."""
    page = [b for b in ALL if b.page == block.page]
    files = tuple(sorted(b.text for b in page if b.lang == "python" and b.file_name))
    toml = tuple(b.text for b in page if b.lang == "toml" and b.line < block.line)
    return files, toml


def cases() -> list[Case]:
    out: list[Case] = []
    seen: dict[tuple, str] = {}
    for b in ALL:
        if skip_reason(b):
            continue
        if b.lang in SHELL:
            lines = [(c, None) for c in command_lines(b.text)]
        elif b.lang == "yaml":
            lines = [yaml_command(b)]
        else:
            continue
        for cmd, yaml_name in lines:
            if cmd.split()[0] not in ("prunekit", "make"):
                raise AssertionError(f"{b.id}: `{cmd}` is neither a prunekit nor a make command: add a rule")
            why = command_skip(cmd)
            if why or not cmd.startswith("prunekit "):
                out.append(Case(b, cmd, shlex.split(cmd), yaml_name, why or "no rule for this command"))
                continue
            for shown in expand(cmd):
                key = (" ".join(shown), yaml_name and b.text, page_env(b))
                case = Case(b, cmd, shown, yaml_name)
                if key in seen:  # the same command in the same setting: run once
                    case.skip = f"the same command as {seen[key]}, which runs it"
                seen.setdefault(key, b.id)
                out.append(case)
    return out


CASES = cases()


def param(case: Case):
    marks = [pytest.mark.slow] if any(re.search(p, " ".join(case.shown)) for p in SLOW) else []
    return pytest.param(case, id=case.id, marks=marks)


# ---------------------------------------------------------------------------------------------- the tests


def test_every_block_has_a_rule():
    """A new kind of block fails here instead of being ignored, and every skip still matches something."""
    known = {"python", "yaml", "toml", *SHELL}
    odd = [f"{b.id} ({b.lang})" for b in ALL if b.lang not in known and not skip_reason(b)]
    assert not odd, f"code blocks this test does not know how to run: {odd}; add a rule or a SKIP_BLOCKS entry"
    assert len(ALL) >= 12, [b.id for b in ALL]  # the parser sees the pages' blocks (14 when written)
    stale = [k for k in SKIP_BLOCKS if not any(b.page == k[0] and b.first.startswith(k[1]) for b in ALL)]
    assert not stale, f"SKIP_BLOCKS entries that match no block any more: {stale}"
    commands = [" ".join(c.shown) for c in CASES]
    stale = [p for p in [*SKIP_COMMANDS, *SLOW] if not any(re.search(p, c) for c in commands)]
    assert not stale, f"SKIP_COMMANDS / SLOW entries that match no documented command any more: {stale}"
    run = {(c.block.page, " ".join(c.shown)) for c in CASES if not c.skip}
    assert not [k for k in EXPECT if k not in run], f"EXPECT entries for no command that runs: {set(EXPECT) - run}"


def test_cheap_overrides_are_documented():
    cli = (ROOT / "docs" / "cli.md").read_text()
    for opt in [w.split("=")[0] for w in CHEAP if w.startswith(("--", "data.", "run.")) and w != "--set"]:
        assert opt in cli, f"CHEAP uses {opt}, which docs/cli.md does not document"


PY_PAGES = sorted({b.page for b in ALL if b.lang == "python" and not skip_reason(b)})


@pytest.mark.parametrize("page", PY_PAGES)
def test_python_blocks(page, tmp_path):
    code = [b for b in ALL if b.page == page and b.lang == "python" and not skip_reason(b)]
    prepare(page, 0, tmp_path)
    for b in code:
        (tmp_path / f"block{b.line}.py").write_text(b.text)
    runner = "ns = {'__name__': '__main__'}\n" + "".join(
        f"exec(compile(open('block{b.line}.py').read(), {b.id!r}, 'exec'), ns)\n" for b in code
    )
    proc = subprocess.run(
        [sys.executable, "-c", runner], cwd=tmp_path, env=env_for(None), capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, f"{page}: python blocks {[b.line for b in code]} failed:\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("case", [param(c) for c in CASES])
def test_command(case, tmp_path, request):
    if case.skip:
        pytest.skip(case.skip)
    site = prepare(case.block.page, case.block.line, tmp_path)
    if case.yaml_name:
        (tmp_path / case.yaml_name).write_text(case.block.text)
    words = " ".join(case.shown)
    argv = fill(case.shown, tmp_path, request.getfixturevalue)
    if trains(argv):
        argv = [*argv, *CHEAP]
    proc = run_cli(argv, tmp_path, env_for(site), f"{case.block.id}: `{words}`")
    for s in EXPECT.get((case.block.page, words), []):
        assert s in proc.stdout, f"{case.block.id}: `{words}` does not print {s!r}:\n{proc.stdout[-3000:]}"


# ---------------------------------------------------------------------------------------------- what the docs cite


def test_docs_cite_nothing_outside_the_repository():
    """The docs, configs and code comments are self-contained: no design notes or paths outside the repository
    (docs/strategies.md writes out the CHEX equations and defaults with the paper's and the authors' sources)."""
    outside = ["CHEX" + ".md", "/work/" + "shared", "shared/" + "seed", "reading" + "-notes"]
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("configs/*"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("prunekit/**/*.py"), *ROOT.glob("strategies/*.py"), *ROOT.glob("graphs/*.py")]  # fmt: skip
    found = [f"{f.relative_to(ROOT)}: {s}" for f in files if f.is_file() for s in outside if s in f.read_text()]
    assert not found, f"references to files outside the repository: {found}"


def _doc_default(cell: str):
    cell = cell.strip().strip("`")
    if cell == "unset":
        return None
    if cell in ("true", "false"):
        return cell == "true"
    try:
        return float(cell)
    except ValueError:
        return cell


@pytest.mark.parametrize("name", ["chex", "magnitude", "random"])
def test_strategy_parameter_tables_match_the_code(name):
    """Each built-in strategy's parameter table in docs/strategies.md lists exactly its parameters, with the
    defaults the code has."""
    import prunekit as pk

    text = (ROOT / "docs" / "strategies.md").read_text()
    section = re.split(r"^## ", text, flags=re.M)
    body = next(s for s in section if s.startswith(f"`{name}`"))
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", body, flags=re.M))
    defaults = pk.list_strategies()[name].defaults
    assert set(rows) == set(defaults), f"{name}: table {sorted(rows)} vs parameters {sorted(defaults)}"
    for p, value in defaults.items():
        doc = _doc_default(rows[p])
        want = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        assert doc == want, f"{name}.{p}: docs/strategies.md says {rows[p].strip()}, the code's default is {value!r}"
