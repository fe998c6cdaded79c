"""The one reader of Nipype's text crash files (``OUT/sub-X/log/<run id>/crash-*.txt``).

The subject report lists a run's crash files as its errors and the group level
explains a failed row by the newest one; both read them here, so a crash reads
the same on both pages. It lives in ``utils`` because ``reports`` imports
``group`` (for the group page's data), so ``group`` cannot import ``reports``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SESSION_MENTION = re.compile(r"(?<![a-zA-Z0-9])ses[-_]([a-zA-Z0-9]+)")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure)\b.*")


@dataclass
class Crash:
    """The useful lines of one Nipype text crash file."""

    path: Path
    node: str | None
    """The failing node (its ``Node:`` line), when the file names one."""
    error: str
    """The last exception line (the innermost error), else the last line of the file."""
    mtime: float = 0.0
    sessions: frozenset[str] = frozenset()
    """Sessions the crash file names (``ses-X`` or a ``ses_X`` node name); empty when none."""

    def concerns(self, session: str | None) -> bool:
        """Whether this crash may belong to ``session`` (a crash naming no session concerns all)."""
        return not self.sessions or session in self.sessions

    @property
    def summary(self) -> str:
        """``crash-<...>.txt: <error>``: one line for the subject report's Errors."""
        return f"{self.path.name}: {self.error}"


def read_crash(path: Path) -> Crash:
    """The failing node and the last error line of a Nipype text crash file."""
    path = Path(path)
    lines = [line.rstrip() for line in path.read_text(errors="replace").splitlines()]
    node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")), None)
    text = [line.strip() for line in lines if line.strip()]
    errors = [line for line in text if _EXCEPTION_LINE.match(line)]
    error = errors[-1] if errors else (text[-1] if text else "empty crash file")
    sessions = frozenset(_SESSION_MENTION.findall("\n".join(lines)))
    return Crash(path=path, node=node, error=error, mtime=path.stat().st_mtime, sessions=sessions)


def find_crashes(output_dir: Path, subject: str, *, run_uuid: str | None = None) -> list[Crash]:
    """Crash files of one subject (of one run when ``run_uuid`` is given), oldest first."""
    paths = Path(output_dir).glob(f"sub-{subject}/log/{run_uuid or '*'}/crash-*.txt")
    return sorted((read_crash(p) for p in paths), key=lambda crash: (crash.mtime, crash.path.name))
