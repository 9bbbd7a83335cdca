"""Comparison tables of finished runs: a rich table for the terminal, and Markdown, CSV and JSON files.

    results = [RunResult.from_dir(d) for d in run_dirs]
    console.print(rich_table(results))
    write_reports(results, "runs/compare-...")   # comparison.md/.csv/.json + plots

Columns: strategy, top-1 (and the delta to the dense baseline when one ran), params, MACs, MACs
reduction, latency of the slimmed model and its speedup over the dense model, train time, time spent in
pruning events; a failed strategy keeps its row, with the error. When a run had a latency budget
(prune.latency), two more: its target in ms (and as a fraction of the dense latency) and what the slimmed
model measures (ms, and the relative difference to the target), both timed at the budget's batch size. Where
rows would share a name (``prunekit report`` over several directories; ``prunekit.sweep.label_rows``), a budget
column and a run column (the run directory) tell them apart; runs without a result show why in the status
("missing: ...", "unfinished: epoch k of N ...", "failed: ...").
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from typing import Any

from .checkpoint import jsonable, write_text

COLUMNS = [
    ("strategy", "strategy"),
    ("budget", "budget"),
    ("run", "run"),
    ("top1", "top-1 %"),
    ("delta", "Δ top-1"),
    ("params", "params"),
    ("macs", "MACs"),
    ("macs_reduction", "MACs red."),
    ("latency_ms", "latency ms"),
    ("speedup", "speedup"),
    ("latency_target", "latency target ms"),
    ("latency_achieved", "achieved ms"),
    ("train_seconds", "train s"),
    ("event_seconds", "prune s"),
    ("status", "status"),
]
# left out of the terminal table in this order when it does not fit (the files always have every column)
# (a latency budget's target goes before its achieved figure, which also says how far it is from the target)
DROP_ORDER = ("event_seconds", "train_seconds", "params", "latency_ms", "macs", "speedup", "latency_target",
              "macs_reduction")  # fmt: skip
# shown only when a run has them: latency budgets; budget and run directory where rows would share a name
OPTIONAL = ("latency_target", "latency_achieved", "budget", "run")
STATUS_MIN = 24  # the status column (an error message) folds onto lines of at least this width
STRATEGY_MIN = 16  # and a long strategy name onto lines of at least this width


def _human(n: int | float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def rows(results: list[Any]) -> list[dict[str, Any]]:
    """One plain dict per result with the table's values (numbers, not strings)."""
    out = []
    for r in results:
        d = r.to_dict() if hasattr(r, "to_dict") else dict(r)
        name = getattr(r, "name", d.get("strategy"))
        delta = None
        if d.get("dense_top1") is not None and d.get("top1") is not None and d.get("strategy") not in ("none", "dense"):
            delta = d["top1"] - d["dense_top1"]
        status = d.get("status", "ok")
        if status in ("missing", "unfinished"):  # prunekit report: a planned run with no result (yet)
            status = f"{status}: {d.get('error') or 'no result'}"
        elif status not in ("ok", "diverged"):  # diverged: the loss stopped being finite (error.txt says where)
            status = f"failed: {d.get('error') or 'unknown error'}"
        out.append(
            {
                "strategy": name,
                "budget": d.get("budget"),
                "run": d.get("run_label"),
                "top1": d.get("top1"),
                "top5": d.get("top5"),
                "delta": delta,
                "params": d.get("params"),
                "dense_params": d.get("dense_params"),
                "macs": d.get("macs"),
                "dense_macs": d.get("dense_macs"),
                "macs_reduction": d.get("macs_reduction"),
                "latency_ms": d.get("latency_ms"),
                "dense_latency_ms": d.get("dense_latency_ms"),
                "speedup": d.get("speedup"),
                "latency_target": d.get("latency_target"),
                "latency_target_ms": d.get("latency_target_ms"),
                "latency_achieved": d.get("latency_achieved"),
                "latency_achieved_ms": d.get("latency_achieved_ms"),
                "latency_budget_batch": d.get("latency_budget_batch"),
                "train_seconds": d.get("train_seconds"),
                "event_seconds": d.get("event_seconds"),
                "status": status,
                "run_dir": d.get("run_dir"),
            }
        )
    return out


def _cells(row: dict[str, Any]) -> list[str]:
    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return [
        str(row["strategy"]),
        row.get("budget") or "-",
        row.get("run") or "-",
        f(row["top1"], ".2f"),
        "-" if row["delta"] is None else f"{row['delta']:+.2f}",
        _human(row["params"]),
        _human(row["macs"]),
        "-" if row["macs_reduction"] is None else f"{100 * row['macs_reduction']:.1f}%",
        f(row["latency_ms"], ".2f"),
        "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
        *_latency_budget_cells(row),
        f(row["train_seconds"], ".1f"),
        f(row["event_seconds"], ".2f"),
        str(row["status"]),
    ]


def _latency_budget_cells(row: dict[str, Any]) -> list[str]:
    """The latency target ("12.30 (0.6x)": ms and the fraction of the dense latency) and what the slimmed model
    achieved ("12.01 (0.586x, -2.4%)": ms, fraction, relative difference to the target), or "-"."""
    target, target_ms = row.get("latency_target"), row.get("latency_target_ms")
    ms, frac = row.get("latency_achieved_ms"), row.get("latency_achieved")
    if target is None or target_ms is None:
        return ["-", "-"]
    got = "-" if ms is None or frac is None else f"{ms:.2f} ({frac:.3g}x, {100 * (frac / target - 1):+.1f}%)"
    return [f"{target_ms:.2f} ({target:g}x)", got]


def present_columns(results: list[Any]) -> list[str]:
    """The keys of COLUMNS a table of ``results`` has: all but the OPTIONAL ones no run has a value for."""
    data = rows(results)
    return [k for k, _ in COLUMNS if k not in OPTIONAL or any(r.get(k) is not None for r in data)]


def _caption(results: list[Any]) -> str:
    ok = [r for r in results if getattr(r, "status", "ok") == "ok"]
    if not ok:
        return ""
    r = ok[0]
    parts = [f"{r.dataset} / {r.model}", plural(r.epochs, "epoch"), f"seed {r.seed}", f"device {r.device}"]
    if r.dense_macs:
        parts.append(f"dense: {_human(r.dense_params)} params, {_human(r.dense_macs)} MACs")
    if r.latency_batch:
        methods = {getattr(x, "latency_method", None) for x in ok} - {None}
        if len(methods) == 1:
            how = next(iter(methods))
        elif methods:
            how = "median of interleaved rounds after a warm-up (rounds per run: latency_method in result.json)"
        else:
            how = "median"
        parts.append(f"latency: batch {r.latency_batch}, {how}")
        if methods:
            parts.append("speedup: median of the per-round dense/pruned ratios")
    if getattr(r, "latency_budget_batch", None):
        parts.append(f"latency budget timed at batch {r.latency_budget_batch}")
    return ", ".join(parts)


def plural(n: int | None, word: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fit_columns(results: list[Any], width: int | None) -> tuple[list[str], list[str]]:
    """The column keys that fit a table of at most ``width`` characters, and the ones left out (in
    ``DROP_ORDER``; the others always stay). ``width`` None: all of them."""
    keys = present_columns(results)
    if width is None:
        return keys, []
    need = _min_widths(results)
    shown, hidden = list(keys), []
    for key in DROP_ORDER:
        if sum(need[k] + 3 for k in shown) + 1 <= width:  # 3: a border and two spaces per column
            break
        shown.remove(key)
        hidden.append(key)
    return shown, hidden


def _min_widths(results: list[Any], natural: bool = False) -> dict[str, int]:
    """Each column's narrowest width: its longest cell (cells never fold) and its header's longest word (a
    header wraps at its spaces); the status column (an error message) folds down to ``STATUS_MIN``.
    ``natural``: the widths without any wrapping instead (the status column at most 60)."""
    keys = [k for k, _ in COLUMNS]
    cells = [dict(zip(keys, _cells(row))) for row in rows(results)]
    out = {}
    for key, head in COLUMNS:
        longest = max((len(c[key]) for c in cells), default=0)
        if key == "status":
            longest = min(longest, 60 if natural else STATUS_MIN)
        elif key in ("strategy", "run") and not natural:  # a long name (package.module:Class, a path) folds too
            longest = min(longest, STRATEGY_MIN)
        out[key] = max(longest, len(head) if natural else max(len(w) for w in head.split()))
    return out


def rich_table(
    results: list[Any], title: str = "prunekit results", width: int | None = None, full_in: str | None = None
) -> Any:
    """A ``rich.table.Table`` of the results; with ``width``, only the columns that fit (``fit_columns``),
    and a caption line naming the others and where they are (``full_in``: e.g. "comparison.csv")."""
    from rich.table import Table

    shown, hidden = fit_columns(results, width)
    caption = _caption(results)
    if hidden:
        heads = dict(COLUMNS)
        where = f"; every column is in {full_in}" if full_in else ""
        note = f"not shown at {width} columns: {', '.join(heads[k] for k in hidden)}{where}"
        caption = f"{caption}\n{note}" if caption else note
    table = Table(title=title, caption=caption or None)
    fixed: dict[str, int] = {}
    if width is not None:
        natural = _min_widths(results, natural=True)
        if sum(natural[k] + 3 for k in shown) + 1 > width:  # too wide for rich to lay out: fix the widths
            fixed = {k: w for k, w in _min_widths(results).items() if k in shown}
            # numbers keep their width; the strategy name and the status (an error) share what is left
            rest = width - 1 - 3 * len(shown) - sum(w for k, w in fixed.items() if k not in ("strategy", "status"))
            status = min(natural["status"], max(STATUS_MIN, rest - natural["strategy"]))
            fixed["strategy"] = max(len("strategy"), min(natural["strategy"], rest - status))
            fixed["status"] = max(len("status"), rest - fixed["strategy"])
    for key, head in COLUMNS:
        if key in shown:
            table.add_column(
                head,
                justify="left" if key in ("strategy", "budget", "run", "status") else "right",
                overflow="fold",
                width=fixed.get(key),
                max_width=60 if key == "status" else None,
            )
    index = [i for i, (key, _) in enumerate(COLUMNS) if key in shown]
    for row in rows(results):
        status = str(row["status"])
        style = "red" if status.startswith(("failed", "diverged")) else "yellow" if status != "ok" else None
        cells = _cells(row)
        table.add_row(*(cells[i] for i in index), style=style)
    return table


def print_table(results: list[Any], title: str = "prunekit results", full_in: str | None = None) -> None:
    """Print the table to stdout in the terminal's width (``COLUMNS`` when set; 140 when stdout is not a
    terminal), leaving out the columns that do not fit (``fit_columns``; ``full_in`` names the file that has
    them all). Rich renders plain text when stdout is not a terminal."""
    from rich.console import Console

    width = _term_width()
    Console(width=width).print(rich_table(results, title, width=width, full_in=full_in))


def _term_width() -> int:
    return shutil.get_terminal_size((140, 24)).columns  # COLUMNS, else the terminal, else 140


def markdown(results: list[Any], title: str | None = None) -> str:
    keys = present_columns(results)
    index = [i for i, (key, _) in enumerate(COLUMNS) if key in keys]
    heads = [COLUMNS[i][1] for i in index]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for row in rows(results):
        cells = [_cells(row)[i].replace("|", "\\|").replace("\n", " ") for i in index]
        lines.append("| " + " | ".join(cells) + " |")
    cap = _caption(results)
    if cap:
        lines += ["", cap]
    return "\n".join(lines) + "\n"


def to_csv(results: list[Any]) -> str:
    data = rows(results)
    buf = io.StringIO()
    if data:
        w = csv.DictWriter(buf, fieldnames=list(data[0]))
        w.writeheader()
        for r in data:
            w.writerow(r)
    return buf.getvalue()


def to_json(results: list[Any]) -> str:
    return json.dumps([jsonable(r.to_dict() if hasattr(r, "to_dict") else r) for r in results], indent=2) + "\n"


def write_reports(results: list[Any], out_dir: str, plots: bool = True) -> dict[str, str]:
    """comparison.md / .csv / .json (and PNG plots) in ``out_dir``; returns {kind: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "markdown": os.path.join(out_dir, "comparison.md"),
        "csv": os.path.join(out_dir, "comparison.csv"),
        "json": os.path.join(out_dir, "comparison.json"),
    }
    write_text(paths["markdown"], markdown(results, "prunekit comparison"))
    write_text(paths["csv"], to_csv(results))
    write_text(paths["json"], to_json(results))
    if plots:
        from .plots import write_plots

        paths.update(write_plots(results, out_dir))
    return paths


def find_run_dirs(paths: list[str]) -> list[str]:
    """Run directories (holding result.json) among ``paths`` and their immediate sub-folders."""
    found = []
    for p in paths:
        if os.path.exists(os.path.join(p, "result.json")):
            found.append(p)
        elif os.path.isdir(p):
            for sub in sorted(os.listdir(p)):
                if os.path.exists(os.path.join(p, sub, "result.json")):
                    found.append(os.path.join(p, sub))
    return found


__all__ = [
    "COLUMNS",
    "find_run_dirs",
    "markdown",
    "print_table",
    "rich_table",
    "rows",
    "to_csv",
    "to_json",
    "write_reports",
]
