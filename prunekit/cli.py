"""The ``prunekit`` command line (also ``python -m prunekit``).

    prunekit run --strategy chex                      # a whole job on the embedded digits data (< 1 min, CPU)
    prunekit run --config configs/cifar10_resnet56_chex.yaml --set data.root=/data/cifar10
    prunekit run --resume runs/chex-digits-resnet20-20250101-120000
    prunekit compare --strategies chex,magnitude,random --dense
    prunekit list [strategies|models|datasets]
    prunekit graph --model resnet56 --dataset cifar10 --json groups.json --dot groups.dot
    prunekit export runs/chex-digits-... --out small.pt [--onnx] [--plan plan.json]
    prunekit compare --strategies chex,magnitude --dense --emit-commands cmds.txt   # one `prunekit run` per line
    prunekit report runs/compare-digits-... [more run dirs] --out report/
    prunekit run --nproc 2 ...                        # DDP via torchrun (gloo on CPU)

Each subcommand has one small function that declares its parser (``add_<name>_parser``) and one that
runs it (``cmd_<name>``). Config layering: defaults < --config YAML < flags < --set key=value.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from .config import Config, ConfigError, describe_keys, load_config

# flag dest -> dotted config key
FLAG_KEYS = {
    "dataset": "data.name",
    "data_root": "data.root",
    "image_size": "data.image_size",
    "model": "model.name",
    "leaf_modules": "model.leaf_modules",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "optimizer": "train.optimizer",
    "device": "train.device",
    "seed": "train.seed",
    "deterministic": "train.deterministic",
    "strategy": "prune.strategy",
    "sparsity": "prune.sparsity",
    "macs": "prune.macs",
    "latency": "prune.latency",
    "latency_batch": "prune.latency_batch",
    "round_to": "prune.round_to",
    "out": "run.out",
    "name": "run.name",
    "progress": "run.progress",
}


class CLIError(Exception):
    """A usage error reported as ``prunekit: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------------------------- shared options


def _add_plugins(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugins",
        metavar="MODULE[,MODULE]",
        default=None,
        help="import these modules first (they may register strategies or models)",
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("config (defaults < --config < flags < --set)")
    g.add_argument("--config", metavar="YAML", help="a config file (see configs/)")
    g.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any dotted key, e.g. --set train.lr=0.05 --set prune.params.delta_0=0.2",
    )
    g.add_argument("--dataset", help="digits | fashion-mnist | cifar10 | cifar100 | imagefolder | synthetic")
    g.add_argument("--data-root", help="folder holding the dataset's files")
    g.add_argument("--image-size", type=int, help="resize inputs to this side length")
    g.add_argument(
        "--model", help="resnet20/32/56/110, small_cnn, a torchvision name, timm:<name> or package.module:factory"
    )
    _add_leaf_modules(g)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--seed", type=int)
    g.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms")
    g.add_argument("--sparsity", type=float, help="fraction of prunable channels to remove")
    g.add_argument("--macs", type=float, help="fraction of the dense MACs to keep (instead of --sparsity)")
    g.add_argument(
        "--latency",
        type=float,
        metavar="F",
        help="fraction of the dense model's latency to keep, timed on the run's device (instead of --sparsity)",
    )
    g.add_argument(
        "--latency-batch",
        type=int,
        metavar="N",
        help="batch size the latency budget is timed at (default run.latency_batch, 32): the batch you deploy at; "
        "small inputs at a small batch are dominated by per-layer overhead that pruning cannot remove",
    )
    g.add_argument(
        "--round-to",
        type=_round_to,
        metavar="N|auto",
        help="kept channels per group are a multiple of this (auto, with --latency: the fastest of 1/8/16/32)",
    )
    g.add_argument("--out", help="parent folder of run directories (default runs/)")
    g.add_argument("--name", help="run directory name")
    g.add_argument("--progress", choices=["auto", "rich", "plain", "off"])


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="trust the run directory: unpickle its checkpoint in full (runs code pickled in it; needed for "
        "checkpoints of older prunekit versions) and build any model factory it names",
    )


def _plugin_modules(args: argparse.Namespace) -> list[str]:
    """The --plugins modules: their model factories are trusted (their code already runs)."""
    return [s.strip() for s in (args.plugins or "").split(",") if s.strip()]


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _comma_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _add_leaf_modules(g: Any) -> None:
    g.add_argument(
        "--leaf-modules",
        type=_comma_list,
        metavar="NAME[,NAME]",
        help="submodules the channel graph keeps opaque: qualified names (layer1.0) or class names "
        "(Conv2dSame, timm.layers.Conv2dSame); sets model.leaf_modules",
    )


def _add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train with DDP on N processes (re-launches itself under torchrun; gloo on CPU)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    flags = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
    return load_config(getattr(args, "config", None), flags=flags, sets=getattr(args, "sets", None))


def load_plugins(spec: str | None) -> list[str]:
    """Import the comma-separated modules of ``--plugins`` (a clear error when one cannot be imported)."""
    loaded = []
    if not spec:
        return loaded
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        from .registry import DuplicateStrategyError, StrategyClassError

        try:
            importlib.import_module(name)
        except ImportError as e:
            raise CLIError(f"--plugins: cannot import {name!r} ({e}); is it installed or on PYTHONPATH?") from e
        except (StrategyClassError, DuplicateStrategyError) as e:  # a registration the plugin got wrong
            raise CLIError(f"--plugins {name}: {e}") from e
        loaded.append(name)
    return loaded


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def relaunch_ddp(nproc: int, argv: list[str]) -> int:
    """Run ``prunekit <argv without --nproc>`` under torchrun with ``nproc`` processes on this machine."""
    if nproc < 1:
        raise CLIError(f"--nproc must be at least 1, got {nproc}")
    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = i + 1 < len(argv)
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "prunekit",
        *rest,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)


# ---------------------------------------------------------------------------------------- run


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="train and prune with one strategy",
        description="Train and prune with one strategy; writes a run directory and prints the result table.",
    )
    p.add_argument("--strategy", help="a registered strategy (`prunekit list strategies`) or none (dense)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run from its directory")
    _add_trust(p)
    _add_config_options(p)
    _add_nproc(p)
    _add_plugins(p)
    p.set_defaults(func=cmd_run)


def _config_options_given(args: argparse.Namespace) -> bool:
    """Whether any config option (a flag, --config, --set) is on the command line: --resume takes none."""
    return bool(args.config or args.sets or any(getattr(args, d, None) is not None for d in FLAG_KEYS))


def cmd_run(args: argparse.Namespace) -> int:
    if args.trust_checkpoint and not args.resume:
        raise CLIError("--trust-checkpoint applies to --resume DIR only")
    cfg = None if args.resume else config_from_args(args)  # config errors before the heavy imports
    from .harness import run
    from .report import print_table

    if args.resume:
        if _config_options_given(args):
            raise CLIError("--resume continues a run with its own config.yaml; drop the other config options")
        result = run(
            None, resume=args.resume, trust_checkpoint=args.trust_checkpoint, trusted_factories=_plugin_modules(args)
        )
    else:
        result = run(cfg)
    if _is_main_rank():
        print_table([result], title=f"prunekit run: {result.name}", full_in="the run's result.json")
        print(f"run directory: {result.run_dir}")
    return 0


# ---------------------------------------------------------------------------------------- compare


COMPARE_STRATEGIES = "chex,magnitude,random"


def add_compare_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="run several strategies on the same config and compare them",
        description="Train each strategy on the same loop and budget; prints one table and "
        "writes comparison.md/.csv/.json and PNG plots.",
    )
    p.add_argument("--strategies", default=COMPARE_STRATEGIES, help="comma-separated (default: %(default)s)")
    p.add_argument("--dense", action="store_true", help="also train the dense model (the delta column)")
    p.add_argument(
        "--resume", metavar="DIR",
        help="finish an interrupted comparison from its directory, with its own config and strategies: finished "
        "runs are kept, unfinished ones continue from their checkpoint, failed and missing ones run again",
    )  # fmt: skip
    _add_trust(p)
    p.add_argument(
        "--emit-commands",
        metavar="FILE",
        default=None,
        help="train nothing: write one `prunekit run` command per run to FILE (for a job array, GNU parallel, ...) "
        "and their configs under the output root; `prunekit report ROOT` gathers the results",
    )
    _add_config_options(p)
    _add_nproc(p)
    _add_plugins(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.trust_checkpoint and not args.resume:
        raise CLIError("--trust-checkpoint applies to --resume DIR only")
    if args.resume:
        return _resume_compare(args)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not names:
        raise CLIError("--strategies is empty; e.g. --strategies chex,magnitude,random")
    cfg = config_from_args(args)
    if args.emit_commands:
        from .sweep import emit_commands

        commands, root = emit_commands(
            cfg, names, args.dense, args.emit_commands, plugins=_plugin_modules(args), nproc=args.nproc
        )
        print(f"wrote {len(commands)} commands to {args.emit_commands} (configs and sweep.json in {root});")
        print(f"run them anywhere that sees {root} (any order, in parallel), then: prunekit report {root}")
        return 0
    from .harness import compare

    results, out_dir = compare(cfg, names, dense=args.dense)
    return _compare_done(results, out_dir)


def _resume_compare(args: argparse.Namespace) -> int:
    if _config_options_given(args) or args.dense or args.emit_commands or args.strategies != COMPARE_STRATEGIES:
        raise CLIError(
            "--resume finishes a comparison with its own config and strategies (compare.json); drop the other "
            "options (--strategies, --dense, config options)"
        )
    from .harness import compare

    results, out_dir = compare(
        None, resume=args.resume, trust_checkpoint=args.trust_checkpoint, trusted_factories=_plugin_modules(args)
    )
    return _compare_done(results, out_dir)


def _compare_done(results: list[Any], out_dir: str) -> int:
    from .report import print_table

    if _is_main_rank():
        print_table(results, title="prunekit compare", full_in="comparison.csv and .json")
        print(f"comparison written to {out_dir} (comparison.md/.csv/.json, *.png)")
    return 0 if any(r.status == "ok" for r in results) else 1


# ---------------------------------------------------------------------------------------- list


def add_list_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list strategies, models, datasets or config keys")
    p.add_argument("what", nargs="?", default="all", choices=["all", "strategies", "models", "datasets", "keys"])
    p.add_argument("--torchvision", action="store_true", help="with models: also every torchvision name")
    _add_plugins(p)
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .models import TIMM_INSTALL, list_models, timm_installed, torchvision_names

    if args.what in ("all", "strategies"):
        from .registry import failed_plugins, list_strategies

        infos = list_strategies()
        print("strategies: " + ", ".join(["none (dense)", *infos]))
        if args.what == "strategies":
            for info in infos.values():
                print(info.summary(params=True))
            for name, err in failed_plugins().items():
                print(f"{name}: FAILED TO LOAD: {err}")
    if args.what in ("all", "models"):
        names = list_models()
        print("models: " + ", ".join(names) + ", package.module:factory")
        if args.torchvision or args.what == "models":
            print("torchvision models: " + ", ".join(torchvision_names()))
        version = timm_installed()
        state = f"timm {version} installed" if version else "timm not installed"
        print(f"timm:<name>: any timm model ({TIMM_INSTALL}), e.g. timm:resnet18 ({state})")
    if args.what in ("all", "datasets"):
        print("datasets: " + ", ".join(DATASETS))
    if args.what == "keys":
        print("\n".join(describe_keys()))
    return 0


# ---------------------------------------------------------------------------------------- graph


def add_graph_parser(sub: Any) -> None:
    p = sub.add_parser(
        "graph",
        help="print or export a model's channel groups",
        description="Build the channel graph of a model and print its prunable groups and "
        "frozen channel sets; --json/--dot export it.",
    )
    p.add_argument("--model", default=None, help="model name (default: the config's, resnet20)")
    p.add_argument("--dataset", default=None, help="take the input shape and classes from this dataset's defaults")
    p.add_argument("--input-shape", default=None, metavar="C,H,W", help="e.g. 3,224,224 (instead of --dataset)")
    p.add_argument("--num-classes", type=int, default=None)
    _add_leaf_modules(p)
    p.add_argument("--members", action="store_true", help="list every member tensor of every group")
    p.add_argument("--json", metavar="PATH", help="write the graph as JSON ('-' for stdout)")
    p.add_argument("--dot", metavar="PATH", help="write Graphviz DOT ('-' for stdout)")
    p.add_argument("--config", metavar="YAML", help="take model and data from a config")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    _add_plugins(p)
    p.set_defaults(func=cmd_graph)


DATASET_SHAPES = {
    "digits": (1, 8, 10),
    "fashion-mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "imagefolder": (3, 224, 1000),
    "synthetic": (3, 8, 10),
}


def cmd_graph(args: argparse.Namespace) -> int:
    import torch

    import prunekit as pk

    from .models import build_model, resolve_leaf_modules

    flags = {"model.name": args.model, "data.name": args.dataset, "model.leaf_modules": args.leaf_modules}
    cfg = load_config(args.config, flags=flags, sets=args.sets)
    if args.input_shape:
        try:
            c, h, w = (int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise CLIError(f"--input-shape must be C,H,W (e.g. 3,224,224), got {args.input_shape!r}") from None
        classes = args.num_classes or 10
        source = "--input-shape"
    else:
        if cfg.data.name not in DATASET_SHAPES:
            raise CLIError(f"unknown dataset {cfg.data.name!r}; choices: {', '.join(DATASET_SHAPES)}")
        c, h, classes = DATASET_SHAPES[cfg.data.name]
        h = cfg.data.image_size or h
        w = h
        if cfg.data.name == "synthetic":
            c, classes = cfg.data.channels, cfg.data.num_classes
        classes = args.num_classes or classes
        source = f"dataset {cfg.data.name}" + (", data.image_size" if cfg.data.image_size else "")
    model = build_model(cfg.model.name, classes, c, h, **cfg.model.kwargs)
    leaf_modules = resolve_leaf_modules(model, cfg.model.leaf_modules)
    graph = pk.build_graph(model, torch.zeros(1, c, h, w), leaf_modules=leaf_modules)
    wrote = "-" in (args.json, args.dot)
    shape = f"input shape [1, {c}, {h}, {w}] (N, C, H, W; from {source}), {classes} classes"
    print(shape, file=sys.stderr if wrote else sys.stdout)  # stdout stays pure JSON/DOT with '-'
    for path, text in ((args.json, graph.to_json), (args.dot, graph.to_dot)):
        if path == "-":
            print(text())
        elif path:
            text(path)
            print(f"wrote {path}", file=sys.stderr)
    if not wrote:
        print(graph.summary(members=args.members))
        print(f"dense MACs per sample (conv/linear): {graph.macs():,}")
    return 0


# ---------------------------------------------------------------------------------------- export


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="slim a finished run and write the model + how to load it",
        description="Slim the run's final masked model (from its checkpoint) and write it as a "
        "pruning plan that prunekit.load_pruned() rebuilds; optionally TorchScript, ONNX (checked with "
        "onnxruntime) and the readable JSON plan too.",
    )
    p.add_argument("run_dir", help="a run directory (with checkpoint.pt)")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/export/model_pruned.pt)")
    p.add_argument("--torchscript", action="store_true", help="also write a traced TorchScript file beside it")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write the slimmed model as ONNX beside it, checked with onnxruntime (pip install 'prunekit[onnx]')",
    )
    p.add_argument(
        "--plan",
        metavar="PLAN.json",
        default=None,
        help="also write the readable JSON plan (prunekit.load_plan) there, with the weights in PLAN.weights.pt",
    )
    _add_trust(p)
    _add_plugins(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import run_progress, unfinished
    from .harness import export_run

    if args.onnx:
        from .onnx_export import require_onnx

        require_onnx()  # one line naming the extra, before anything is read or written
    if args.plan is not None and not args.plan.endswith(".json"):
        raise CLIError(f"--plan writes JSON: give a path ending in .json, got {args.plan!r}")
    paths = export_run(
        args.run_dir,
        args.out,
        torchscript=args.torchscript,
        trust_checkpoint=args.trust_checkpoint,
        trusted_factories=_plugin_modules(args),
        onnx=args.onnx,
        plan_json=args.plan,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"load it with:\n    import prunekit\n    model = prunekit.load_pruned({paths['plan']!r})")
    progress = run_progress(args.run_dir)
    if progress is not None and progress[0] < progress[1]:
        print(f"prunekit: warning: {unfinished(args.run_dir, *progress)}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------- report


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="re-render tables and plots from run directories",
        description="Read each run directory (or the runs inside a compare directory or a sweep root from "
        "compare --emit-commands) and print/write the comparison table and plots; runs without a result are "
        "marked failed, unfinished or missing.",
    )
    p.add_argument("dirs", nargs="+", help="run directories, compare directories or sweep roots")
    p.add_argument(
        "--out",
        default=None,
        help="where to write comparison.* and plots (default: the single compare directory given, else ./report)",
    )
    p.add_argument("--no-plots", action="store_true")
    _add_plugins(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import print_table, write_reports
    from .sweep import gather

    missing = [d for d in args.dirs if not os.path.isdir(d)]
    if missing:
        raise CLIError(f"not a directory: {', '.join(missing)}")
    results = gather(args.dirs)
    if not results:
        raise CLIError(f"no run directories (with result.json or config.yaml) in {', '.join(args.dirs)}")
    one = args.dirs[0]
    a_run = any(os.path.exists(os.path.join(one, f)) for f in ("result.json", "config.yaml"))  # not a folder of runs
    out = args.out or (one if len(args.dirs) == 1 and not a_run else "report")
    paths = write_reports(results, out, plots=not args.no_plots)
    print_table(results, title="prunekit report", full_in="comparison.csv and .json")
    print("wrote " + ", ".join(sorted(paths.values())))
    return 0


# ---------------------------------------------------------------------------------------- main

PARSERS: list[Callable[[Any], None]] = [
    add_run_parser,
    add_compare_parser,
    add_list_parser,
    add_graph_parser,
    add_export_parser,
    add_report_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunekit", description="Structured channel pruning of PyTorch CNNs.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,compare,list,graph,export,report}")
    sub.required = True
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``prunekit`` and ``python -m prunekit``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        load_plugins(args.plugins)
        if os.getcwd() not in sys.path:  # `--model package.module:factory` finds a package here, as --plugins
            sys.path.append(os.getcwd())  # does (after the installed ones: nothing installed is shadowed)
        if getattr(args, "nproc", None) and "WORLD_SIZE" not in os.environ and not getattr(args, "emit_commands", None):
            return relaunch_ddp(args.nproc, argv)
        return args.func(args)
    except KeyboardInterrupt as e:
        if args.debug:
            raise
        # compare sets compare_dir (the whole comparison resumes), the harness run_dir once a run directory exists
        resume_dir = getattr(e, "compare_dir", None) or getattr(e, "run_dir", None)
        where = f"; resume with --resume {resume_dir}" if resume_dir and _is_main_rank() else ""
        print(f"prunekit: interrupted{where}", file=sys.stderr)
        return 130
    except Exception as e:  # user-facing errors: one line, no traceback unless --debug
        if args.debug or not _user_error(e):
            raise
        hint = " (--debug shows the traceback)" if _strategy_error(e) else ""
        print(f"prunekit: error: {e}{hint}", file=sys.stderr)
        return 2
    finally:
        _shutdown_distributed()


def _user_error(e: Exception) -> bool:
    """Errors in what the user asked for (reported in one line) as opposed to bugs (full traceback).
    Looks only at modules already imported, so a config error does not pay for importing torch."""
    user: tuple[type, ...] = (CLIError, ConfigError, FileNotFoundError, ValueError, KeyError, ImportError)
    for module, name in (
        ("prunekit.data", "DataError"),
        ("prunekit.graphs.trace", "GraphBuildError"),
        ("prunekit.registry", "StrategyClassError"),
        ("prunekit.trainer", "TrainingDiverged"),
    ):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            user = (*user, cls)
    return isinstance(e, user)


def _strategy_error(e: Exception) -> bool:
    """A strategy (the user's code) broke the Strategy contract: the traceback shows where."""
    cls = getattr(sys.modules.get("prunekit.controller"), "StrategyError", None)
    return isinstance(cls, type) and isinstance(e, cls)


def _shutdown_distributed() -> None:
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return
    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # never mask the command's own result while shutting down
        pass


if __name__ == "__main__":
    sys.exit(main())
