"""Training progress: one CSV row per step and a live bar with loss and ETA.

The CSV (``log.csv`` in each stage directory) is appended to, so a resumed run
continues the same file; rows past the resumed step (written after the last
checkpoint by the killed run) are dropped first so every step appears once.
The bar is a ``rich`` progress bar on a terminal; without one (batch jobs, CI
logs) a log line every tenth of the stage carries the same numbers.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path

LOGGER = logging.getLogger("demist.train")


class StageLog:
    """CSV rows and progress display for one training stage on the main rank.

    Args:
        path: the CSV file; None (non-main ranks) disables everything.
        description: shown on the bar and in log lines.
        total: steps of the stage; start: the step resumed from.
    """

    def __init__(self, path: Path | None, description: str, total: int, start: int = 0) -> None:
        self.path = Path(path) if path else None
        self.description = description
        self.total = total
        self.start = start
        self._t0 = time.monotonic()
        self._fields: list[str] | None = None
        self._bar = None
        self._task = None
        self._next_log = start
        if self.path is not None:
            self._truncate_after(start)
            if sys.stderr.isatty():
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeRemainingColumn)

                self._bar = Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[loss]}"), TimeRemainingColumn(),
                )
                self._bar.start()
                self._task = self._bar.add_task(description, total=total, completed=start, loss="")

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        if step == 0:  # a fresh start: the old log describes another run
            self.path.unlink()
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            self._fields = list(rows[0])
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) != len(rows):
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self._fields)
                writer.writeheader()
                writer.writerows(kept)

    def eta_seconds(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.monotonic() - self._t0) / done * (self.total - step)

    def step(self, step: int, values: dict[str, float]) -> None:
        """Record the losses after optimisation step ``step`` (1-based)."""
        if self.path is None:
            return
        row = {"step": step, "time_s": round(time.monotonic() - self._t0, 3), **values}
        new_file = not self.path.exists()
        if self._fields is None:
            self._fields = list(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        loss = values.get("loss", float("nan"))
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"loss {loss:.4g}")
        if step >= self._next_log or step == self.total:
            LOGGER.info(
                "%s: step %d/%d loss %.4g, ETA %.0f s",
                self.description, step, self.total, loss, self.eta_seconds(step),
            )
            self._next_log = step + max(self.total // 10, 1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
