"""Atomic file writes: a file appears complete or not at all.

Everything demist writes into the output dataset goes through here: the content
is written to a hidden temporary file in the destination directory and renamed
over the destination, which POSIX makes atomic on one filesystem. Parallel
participant runs sharing an output directory (one SLURM task per subject) can
therefore never see or leave a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it over ``dest`` on success.

    ``suffix`` should repeat the destination's extension when the writer infers
    the format from the name (nibabel does: pass ``".nii.gz"``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(dest: Path, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def atomic_write_bytes(dest: Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_copy(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


def atomic_write_if_absent(dest: Path, text: str) -> bool:
    """Create ``dest`` with ``text`` unless it exists; safe between processes.

    Used for files shared by parallel participant runs
    (``dataset_description.json``): the first writer wins, nobody truncates.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, dest)  # fails if dest exists: no race, no truncation
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def commit_files(dest_dir: Path, writers: dict[str, Callable[[Path], object]]) -> list[Path]:
    """Write several files into ``dest_dir`` so that they appear together or not at all.

    Each ``writers[name](path)`` writes one file into a hidden staging folder
    beside the destinations; only when every one has succeeded are they renamed
    into place, in the order given (put a sidecar before its image so a reader
    that sees an image also finds its sidecar). A failure leaves nothing behind.

    Returns:
        The destination paths, in the order given.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{uuid.uuid4().hex[:8]}-", dir=dest_dir))
    try:
        for name, write in writers.items():
            write(staging / name)
        done = []
        with _signals_held():
            for name in writers:
                os.chmod(staging / name, 0o644)
                os.replace(staging / name, dest_dir / name)
                done.append(dest_dir / name)
        return done
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back while files are renamed into place.

    A run that is stopped (a worker terminated, SLURM's SIGTERM) then stops after
    the renames, never between them: a commit lands whole or not at all.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_leftovers(folder: Path, prefix: str = ".", recursive: bool = True) -> list[Path]:
    """Remove the staging folders and temporary files a killed writer left in ``folder``.

    Only call this while no other process writes there (a participant run holds its
    subjects' locks, :mod:`demist_bids.derivatives.locks`). ``prefix`` narrows the
    temporary files to those of one destination name. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    walk = folder.rglob if recursive else folder.glob
    removed = []
    for path in sorted(walk(".staging-*")) if prefix == "." else []:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for path in sorted(walk(f"{prefix}*.part*")):
        if path.is_file() and path.name.startswith("."):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
