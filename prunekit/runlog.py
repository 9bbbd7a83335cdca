"""What a run prints: the log (console + run.log, rank 0 only) and the per-epoch progress bar.

On a terminal (``run.progress: auto``) lines go through rich and a progress bar shows the epoch;
otherwise (piped, ``progress: plain``) plain ``[prunekit] ...`` lines; ``progress: off`` writes run.log only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .env import Env

log = logging.getLogger("prunekit")


class RunLog:
    """Logging for one run: console (rich on a terminal, plain otherwise) + run.log, rank 0 only."""

    def __init__(self, run_dir: str, env: Env, progress: str):
        self.handlers: list[logging.Handler] = []
        self.console: Any = None
        self.rich = progress == "rich" or (progress == "auto" and sys.stderr.isatty())
        log.setLevel(logging.INFO)
        log.propagate = False
        if not env.main:
            return
        fh = logging.FileHandler(os.path.join(run_dir, "run.log"))
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.handlers.append(fh)
        if progress != "off":
            if self.rich:
                from rich.console import Console
                from rich.logging import RichHandler

                self.console = Console(stderr=True)  # shared with the progress bar, so lines and bar interleave
                ch: logging.Handler = RichHandler(console=self.console, show_path=False, markup=False)
            else:
                ch = logging.StreamHandler(sys.stderr)
                ch.setFormatter(logging.Formatter("[prunekit] %(message)s"))
            self.handlers.append(ch)
        for h in self.handlers:
            log.addHandler(h)

    def close(self) -> None:
        for h in self.handlers:
            log.removeHandler(h)
            h.close()


class Progress:
    """Progress within an epoch: a rich bar on a terminal (``enabled``); in plain mode (``plain_seconds`` > 0)
    a log line at most every ``plain_seconds`` instead, so piped output is not silent during a long epoch:

        [prunekit] epoch 3/10: batch 120/938 (13%), loss 0.5321, 31s, about 3m35s left
    """

    def __init__(
        self,
        enabled: bool,
        console: Any = None,
        plain_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=console,
                transient=True,
            )
            self.bar.start()
        self.task: Any = None
        self.plain_seconds = plain_seconds if self.bar is None else 0.0
        self.clock = clock
        self.description, self.total, self.done, self.first = "", 0, 0, 0
        self.started = self.last = 0.0

    def epoch(self, description: str, total: int, done: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total, completed=done, info="")
        self.description, self.total, self.done, self.first = description, total, done, done
        self.started = self.last = self.clock()

    def advance(self, info: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, info=info)
        self.done += 1
        if self.plain_seconds > 0 and self.done < self.total:
            now = self.clock()
            if now - self.last >= self.plain_seconds:
                self.last = now
                elapsed = now - self.started
                left = elapsed / (self.done - self.first) * (self.total - self.done)
                log.info(
                    "%s: batch %d/%d (%d%%), %s, %s, about %s left",
                    self.description,
                    self.done,
                    self.total,
                    100 * self.done // self.total,
                    info,
                    _duration(elapsed),
                    _duration(left),
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _duration(seconds: float) -> str:
    """``"42s"``, ``"3m05s"``, ``"1h02m"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
