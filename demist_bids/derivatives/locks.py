"""One participant run per subject in an output dataset at a time.

Two runs of the same subject into one output directory (a SLURM array submitted
twice, a run started by hand beside a batch job) would otherwise both commit, and
the subject could end with files from both. Each run holds an exclusive
``flock`` on ``OUT/logs/locks/sub-<label>.lock`` for every subject it works on,
from before its graph runs until its reports are written; a second run finds a
subject held and stops before any work (exit 75, worth retrying later), naming
the run that holds it. The kernel drops the lock when its holder dies, however
it dies, so a killed run never leaves a subject locked. While it holds a subject
a run may also remove what a killed run left half-written there
(:func:`demist_bids.utils.atomic.remove_leftovers`): no other run writes there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from demist_bids.exceptions import TemporaryFailure
from demist_bids.utils.atomic import remove_leftovers

LOCK_DIR = Path("logs") / "locks"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another demist run"
    except OSError:
        return "another demist run"


@contextlib.contextmanager
def hold_subjects(output_dir: Path, subjects: list[str], run_uuid: str = "") -> Iterator[None]:
    """Hold every subject's lock, or none: :class:`TemporaryFailure` (75) names who holds one.

    On leaving, what a killed run or this one left half-written under ``OUT/sub-<label>``
    is removed before the lock is released.
    """
    output_dir = Path(output_dir)
    folder = output_dir / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    held: list[tuple[str, int]] = []
    try:
        for subject in sorted(set(subjects)):
            path = folder / f"sub-{subject}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise TemporaryFailure(
                    f"sub-{subject} is being processed into {output_dir} by {_holder(path)}; "
                    "wait for that run to end or use another output directory") from None
            held.append((subject, fd))
            with contextlib.suppress(OSError):  # who holds it: for the message of a refused run
                os.ftruncate(fd, 0)
                os.write(fd, (f"run {run_uuid} (pid {os.getpid()} on {socket.gethostname()}, "
                              f"since {time.strftime('%Y-%m-%d %H:%M:%S')})\n").encode())
        for subject, _ in held:
            _tidy(output_dir, subject)
        yield
    finally:
        for subject, fd in held:
            with contextlib.suppress(OSError):
                _tidy(output_dir, subject)
            os.close(fd)  # closing the descriptor drops the lock


def _tidy(output_dir: Path, subject: str) -> None:
    remove_leftovers(output_dir / f"sub-{subject}")
    remove_leftovers(output_dir, prefix=f".sub-{subject}.", recursive=False)
