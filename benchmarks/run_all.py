"""Regenerate every published result page (`make bench`): the commands in the "Command" blocks of
docs/results/*.md, one after the other, each writing its Markdown and JSON to docs/results/.

    .venv/bin/python benchmarks/run_all.py                  # every page: about 11.5 hours on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --list           # the commands, without running them
    .venv/bin/python benchmarks/run_all.py --only graph_build overhead
    .venv/bin/python benchmarks/run_all.py --skip-long      # all but the Fashion-MNIST training and train_throughput
    .venv/bin/python benchmarks/run_all.py --quick --out /tmp/res   # each script's --quick mode (smoke test)

PAGES holds the exact published commands (tests/test_bench_commands.py checks them against the pages), so
`make bench` reproduces what is published rather than a variant of it. Pages written by hand or kept as the
record of an earlier state are in NOT_REGENERATED, with the reason. A command that fails is reported and the
others still run; the exit status says whether all passed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "results"
FMNIST = "benchmarks/fmnist_accuracy.py"
SUBSETS = "--train-subset 5000 --test-subset 2000 --seeds 3 --threads 1"


@dataclass(frozen=True)
class Page:
    name: str  # docs/results/NAME.md
    command: str  # as published, from the repository root
    minutes: int  # wall time of the published run on 2 CPU cores (for --skip-long and the plan)

    @property
    def long(self) -> bool:
        return self.minutes > 30

    def argv(self) -> tuple[dict[str, str], list[str]]:
        """(environment overrides, argv with sys.executable for the venv's python)."""
        words = shlex.split(self.command)
        env = {}
        while "=" in words[0]:
            k, v = words.pop(0).split("=", 1)
            env[k] = v
        assert words[0] == ".venv/bin/python", self.command
        return env, [sys.executable, *words[1:]]


# cheapest first, so a broken set-up shows early
PAGES = [
    Page("graph_build", ".venv/bin/python benchmarks/graph_build.py --runs 15 --threads 1 default", 4),
    Page(
        "graph_build_512",
        ".venv/bin/python benchmarks/graph_build.py --runs 15 --threads 1 default --size 512 --name graph_build_512",
        10,
    ),
    Page("overhead", ".venv/bin/python benchmarks/overhead.py", 5),
    Page("speedup", ".venv/bin/python benchmarks/speedup.py", 3),
    Page("latency_stability", ".venv/bin/python benchmarks/latency_stability.py", 3),
    Page("latency_budget", ".venv/bin/python benchmarks/latency_budget.py", 10),
    Page("train_throughput", ".venv/bin/python benchmarks/train_throughput.py --threads 1", 33),
    Page("chex_event_cost", "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chex_event_cost.py", 6),
    Page("chex_ablation", "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chex_ablation.py", 8),
    Page(
        "chex_coupled",
        "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chex_ablation.py --macs 0.3 --seeds 5 --name chex_coupled "
        "--variants 'chex coupled=mean' 'chex coupled=max'",
        3,
    ),
    Page("zoo_coverage", ".venv/bin/python benchmarks/zoo_coverage.py", 26),
    Page("zoo_coverage_timm", "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/zoo_coverage.py --suite timm", 20),
    Page(
        "fmnist_accuracy",
        f"OMP_NUM_THREADS=1 .venv/bin/python {FMNIST} --epochs 6 {SUBSETS} --param chex.delta_T=0.5 --jobs 2",
        53,
    ),
    Page(
        "fmnist_accuracy_15ep",
        f"OMP_NUM_THREADS=1 .venv/bin/python {FMNIST} --epochs 15 {SUBSETS} --targets 0.7 "
        "--strategies chex magnitude random --jobs 2 --name fmnist_accuracy_15ep",
        49,
    ),
    Page(
        "fmnist_accuracy_5seed",
        f"OMP_NUM_THREADS=1 .venv/bin/python {FMNIST} --epochs 15 --train-subset 5000 --seeds 5 --targets 0.7 "
        "--threads 1 --strategies chex magnitude random --variant magnitude_half=magnitude "
        "--param magnitude_half.at=0.5 --variant magnitude_gradual=magnitude --param magnitude_gradual.at=0.1 "
        "--param magnitude_gradual.end=0.6 --variant chex_fixed=chex --param chex_fixed.coupled=fixed "
        "--name fmnist_accuracy_5seed",
        390,
    ),
    Page(
        "fmnist_chex_ablation_15ep",
        f"OMP_NUM_THREADS=1 .venv/bin/python {FMNIST} --epochs 15 --train-subset 5000 --seeds 5 --threads 1 "
        "--targets 0.7 --strategies chex --variant chex_mean=chex --param chex_mean.coupled=mean "
        "--variant chex_max=chex --param chex_max.coupled=max --variant chex_once=chex --param chex_once.explore=false "
        "--variant chex_noregrow=chex --param chex_noregrow.regrow_by=none "
        "--variant chex_early=chex --param chex_early.t_max_fraction=0.3 "
        "--reuse docs/results/fmnist_accuracy_5seed.json --jobs 2 --name fmnist_chex_ablation_15ep",
        59,
    ),
]
NOT_REGENERATED = {
    "chex_findings": "written by hand from the pages above",
    "paper_recipe": "written by hand (what runs without a GPU, what the paper reports)",
    "fmnist_accuracy_zero_gamma": "the record of an interrupted run before CHEX ranked pruned channels by their "
    "MRU gamma (prunekit at commit 4ff7387); kept as evidence, not reproducible with today's defaults",
}


def run_page(page: Page, out: str, quick: bool) -> int:
    env, argv = page.argv()
    if quick:  # the script's own smoke mode: only the script, --quick and the output folder
        argv = argv[:2] + ["--quick"]
    if Path(out).resolve() != DEFAULT_OUT.resolve():
        argv += ["--out", out]
    shown = " ".join([*(f"{k}={v}" for k, v in env.items()), *map(shlex.quote, argv)])
    print(f"[bench] {page.name}: {shown}", flush=True)
    return subprocess.call(argv, cwd=ROOT, env={**os.environ, **env})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [p.name for p in PAGES]
    ap.add_argument("--only", nargs="+", choices=names, metavar="PAGE", help=f"only these pages: {names}")
    ap.add_argument("--skip-long", action="store_true", help="leave out the pages that take over 30 minutes")
    ap.add_argument("--quick", action="store_true", help="each script's --quick mode (smoke test)")
    ap.add_argument("--list", action="store_true", help="print the commands and exit")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder for every page")
    args = ap.parse_args(argv)
    pages = [p for p in PAGES if (not args.only or p.name in args.only) and not (args.skip_long and p.long)]
    if args.quick:  # one smoke run per script
        scripts = {}
        for p in pages:
            scripts.setdefault(p.argv()[1][1], p)
        pages = list(scripts.values())
    if args.list:
        for p in PAGES:
            print(f"{p.name:28s} ~{p.minutes:3d} min  {p.command}")
        for name, why in NOT_REGENERATED.items():
            print(f"{name:28s} not regenerated: {why}")
        return 0
    print(f"[bench] {len(pages)} page(s), about {sum(p.minutes for p in pages)} minutes on 2 CPU cores", flush=True)
    status: list[tuple[str, str, float]] = []
    for page in pages:
        t0 = time.perf_counter()
        rc = run_page(page, args.out, args.quick)
        status.append((page.name, "ok" if rc == 0 else f"failed (exit {rc})", time.perf_counter() - t0))
    print("\n[bench] summary")
    for name, what, secs in status:
        print(f"  {name:28s} {what:18s} {secs:8.1f} s")
    return 0 if all(what == "ok" for _, what, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
