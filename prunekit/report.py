"""Comparison tables of finished runs: a rich table for the terminal, and Markdown, CSV and JSON files.

    results = [RunResult.from_dir(d) for d in run_dirs]
    console.print(rich_table(results))
    write_reports(results, "runs/compare-...")   # comparison.md/.csv/.json + plots

Columns: strategy, top-1 (and the delta to the dense baseline when one ran), params, MACs, MACs
reduction, latency of the slimmed model and its speedup over the dense model, train time, time spent in
pruning events; a failed strategy keeps its row, with the error.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from .checkpoint import jsonable, write_text

COLUMNS = [
    ("strategy", "strategy"),
    ("top1", "top-1 %"),
    ("delta", "Δ top-1"),
    ("params", "params"),
    ("macs", "MACs"),
    ("macs_reduction", "MACs red."),
    ("latency_ms", "latency ms"),
    ("speedup", "speedup"),
    ("train_seconds", "train s"),
    ("event_seconds", "prune s"),
    ("status", "status"),
]


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
        if status != "ok":
            status = f"failed: {d.get('error') or 'unknown error'}"
        out.append(
            {
                "strategy": name,
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
        f(row["top1"], ".2f"),
        "-" if row["delta"] is None else f"{row['delta']:+.2f}",
        _human(row["params"]),
        _human(row["macs"]),
        "-" if row["macs_reduction"] is None else f"{100 * row['macs_reduction']:.1f}%",
        f(row["latency_ms"], ".2f"),
        "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
        f(row["train_seconds"], ".1f"),
        f(row["event_seconds"], ".2f"),
        str(row["status"]),
    ]


def _caption(results: list[Any]) -> str:
    ok = [r for r in results if getattr(r, "status", "ok") == "ok"]
    if not ok:
        return ""
    r = ok[0]
    parts = [f"{r.dataset} / {r.model}", f"{r.epochs} epochs", f"seed {r.seed}", f"device {r.device}"]
    if r.dense_macs:
        parts.append(f"dense: {_human(r.dense_params)} params, {_human(r.dense_macs)} MACs")
    if r.latency_batch:
        parts.append(f"latency: median, batch {r.latency_batch}")
    return ", ".join(parts)


def rich_table(results: list[Any], title: str = "prunekit results") -> Any:
    """A ``rich.table.Table`` of the results."""
    from rich.table import Table

    table = Table(title=title, caption=_caption(results) or None)
    for key, head in COLUMNS:
        table.add_column(
            head,
            justify="left" if key in ("strategy", "status") else "right",
            overflow="fold",
            max_width=60 if key == "status" else None,
        )
    for row in rows(results):
        style = "red" if str(row["status"]).startswith("failed") else None
        table.add_row(*_cells(row), style=style)
    return table


def print_table(results: list[Any], title: str = "prunekit results") -> None:
    """Print the table to stdout (rich renders plain text when stdout is not a terminal)."""
    from rich.console import Console

    Console(width=max(140, _term_width())).print(rich_table(results, title))


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 140


def markdown(results: list[Any], title: str | None = None) -> str:
    heads = [h for _, h in COLUMNS]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for row in rows(results):
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in _cells(row)]
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
