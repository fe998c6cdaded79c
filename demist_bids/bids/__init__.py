"""BIDS queries (pybids) and the naming rules every output shares; no torch here."""

from __future__ import annotations

import json
from pathlib import Path


def raw_dataset(bids_dir: Path, output_dir: Path) -> Path | None:
    """``bids_dir`` when it is a BIDS dataset other than the output itself, else None.

    The group level needs no raw dataset (it reads the derivatives alone); given
    one, it reads its ``participants.tsv`` and lists its subjects without results.
    Standard library only: the command-line parser calls it.
    """
    bids_dir = Path(bids_dir)
    if not (bids_dir / "dataset_description.json").is_file():
        return None
    if bids_dir.resolve() == Path(output_dir).resolve():
        return None
    return bids_dir


def scan_prefix(subject: str, session: str | None = None) -> str:
    """``sub-X`` or ``sub-X_ses-Y``: the one place a scan's file-name prefix is built."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def read_bids_filters(path: Path) -> dict:
    """Read ``--bids-filter-file``: ``{"t1w": {...}, "flair": {...}}`` (the one reader, every level).

    Raises:
        UsageError: not JSON, or not an object with keys ``t1w`` and/or ``flair`` (exit 64).
    """
    from demist_bids.exceptions import UsageError

    try:
        filters = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--bids-filter-file {path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(filters, dict) or set(filters) - {"t1w", "flair"}:
        raise UsageError(
            f"--bids-filter-file {path}: expected an object with keys 't1w' and/or 'flair'"
        )
    return filters
