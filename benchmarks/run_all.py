"""Run the benchmarks one after the other (`make bench`), each writing its Markdown and JSON to docs/results/.

The default set took 52 minutes on 2 CPU cores (zoo_coverage 26, chex_ablation 16). The accuracy benchmark on
Fashion-MNIST (33 training runs, about an hour more there, two at a time) runs only with `--only
fmnist_accuracy.py` or `make bench-accuracy`, which uses the settings of the published results. `--quick`
passes each script's own quick mode (what the CI smoke tests use). A script that fails is reported and the
others still run; the exit status says whether all passed."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# cheapest first, so a broken set-up shows early
SCRIPTS = ["graph_build.py", "overhead.py", "speedup.py", "chex_event_cost.py", "chex_ablation.py", "zoo_coverage.py"]
LONG = ["fmnist_accuracy.py"]
DEFAULT_OUT = ROOT / "docs" / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="each script's --quick mode")
    ap.add_argument("--only", nargs="+", choices=SCRIPTS + LONG, help="run only these scripts")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder for every script")
    args = ap.parse_args(argv)
    status: list[tuple[str, str, float]] = []
    for script in args.only or SCRIPTS:
        path = ROOT / "benchmarks" / script
        if not path.exists():
            status.append((script, "missing", 0.0))
            continue
        # the default folder is each script's own default: left out, so its results show the plain command
        out = [] if Path(args.out).resolve() == DEFAULT_OUT.resolve() else ["--out", args.out]
        cmd = [sys.executable, str(path), *out] + (["--quick"] if args.quick else [])
        print(f"[bench] {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        status.append((script, "ok" if rc == 0 else f"failed (exit {rc})", time.perf_counter() - t0))
    print("\n[bench] summary")
    for script, what, secs in status:
        print(f"  {script:22s} {what:18s} {secs:8.1f} s")
    return 0 if all(what == "ok" for _, what, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
