"""Which array tasks a dataset needs: one per subject, or one per subject and session.

Only the folder names of the BIDS dataset are read (no pybids index): this runs
on a login node, where indexing a large dataset would be slow, and the
participant level validates the data itself.
"""

from __future__ import annotations

from demist_bids.bids import scan_prefix

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Task:
    """One array task: a subject label and, per session, a session label (without prefixes)."""

    subject: str
    session: str = ""

    @property
    def name(self) -> str:
        return scan_prefix(self.subject, self.session)


def _strip(label: str, prefix: str) -> str:
    return label[len(prefix):] if label.startswith(prefix) else label


def _labels(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name[len(prefix):] for p in folder.glob(f"{prefix}*") if p.is_dir())


def find_tasks(
    bids_dir: Path,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    per_session: bool = False,
) -> list[Task]:
    """List the array tasks for ``bids_dir``.

    Args:
        participant_label: subjects to keep (``sub-`` optional); empty keeps all.
        session_label: sessions to keep (``ses-`` optional); empty keeps all.
        per_session: one task per (subject, session) instead of one per subject.

    Raises:
        ValueError: a requested subject is absent, or nothing is left to run.
    """
    subjects = _labels(bids_dir, "sub-")
    wanted = [_strip(label, "sub-") for label in participant_label or []]
    missing = sorted(set(wanted) - set(subjects))
    if missing:
        raise ValueError(f"no such participant in {bids_dir}: {', '.join(missing)}")
    subjects = [s for s in subjects if not wanted or s in wanted]
    sessions_wanted = {_strip(label, "ses-") for label in session_label or []}
    tasks = []
    for subject in subjects:
        if not per_session:
            tasks.append(Task(subject))
            continue
        sessions = _labels(bids_dir / f"sub-{subject}", "ses-") or [""]
        tasks.extend(
            Task(subject, ses) for ses in sessions if not sessions_wanted or ses in sessions_wanted
        )
    if not tasks:
        raise ValueError(f"no participants selected in {bids_dir}")
    return tasks
