"""Find what the participant level left in the output directory.

The group level reads whatever subset of subjects finished, so discovery is a
plain walk of the output tree (the participant contract fixes its layout),
not a pybids index: it is fast, needs no database, and sees half-finished
trees exactly as they are. Subjects of the input dataset without results are
reported with the reason taken from their crash files
(:mod:`demist_bids.utils.crashes`, the reader the subject report uses too).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from demist_bids.bids import scan_prefix
from demist_bids.utils.crashes import find_crashes

LOGGER = logging.getLogger("demist.group")

_ENTITY = re.compile(r"(?:^|_)(sub|ses)-([a-zA-Z0-9]+)")


@dataclass
class ParticipantRun:
    """One subject/session's participant outputs (paths that may be absent are None)."""

    subject: str
    session: str | None
    prefix: str
    """File-name stem shared by the outputs, for example ``sub-01_ses-1``."""
    psr: Path
    std: Path | None = None
    brain_mask: Path | None = None
    dseg: Path | None = None
    sidecar: Path | None = None
    report: Path | None = None

    @property
    def bids_name(self) -> str:
        return self.psr.name.split(".nii")[0]


@dataclass
class Failure:
    """A subject/session of the input without usable results, and why."""

    subject: str
    session: str | None
    status: str
    """``missing`` (no outputs) or ``failed`` (a crash file newer than any output)."""
    reason: str
    crash_file: Path | None = None
    node: str | None = None


def entities(name: str) -> dict[str, str]:
    """``sub`` and ``ses`` labels found in a BIDS file name."""
    return {key: value for key, value in _ENTITY.findall(name)}


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def find_runs(output_dir: Path) -> list[ParticipantRun]:
    """Every native-grid synthesized PSR map in ``output_dir`` with its companions.

    Files are recognised by their parsed BIDS entities against the output
    declarations (:mod:`demist_bids.derivatives.outputs`): the model-grid copy
    (``res-1mm``) and maps in other spaces are other outputs, never other
    subjects; tissue, masks and measured maps all live on the native T1w grid.
    """
    from demist_bids.derivatives.outputs import OUTPUTS, identify, parse

    out = Path(output_dir)
    runs = []
    patterns = ("sub-*/anat/*_PSRmap.nii*", "sub-*/ses-*/anat/*_PSRmap.nii*")
    for psr in sorted(p for pattern in patterns for p in out.glob(pattern)):
        if psr.name.startswith(".") or psr.name.endswith(".json") or identify(psr) != "psr":
            continue
        labels = parse(psr)
        subject, session = labels["subject"], labels.get("session")

        def companion(key: str, extension: str | None = None) -> Path | None:
            return _existing(out / OUTPUTS[key].path(subject, session, extension=extension))

        runs.append(
            ParticipantRun(
                subject=subject,
                session=session,
                prefix=scan_prefix(subject, session),
                psr=psr,
                std=companion("psr_std"),
                brain_mask=companion("brain_mask"),
                dseg=companion("dseg"),
                sidecar=companion("psr", ".json"),
                report=_existing(out / f"sub-{subject}.html"),
            )
        )
    return runs


def input_sessions(bids_dir: Path | None) -> list[tuple[str, str | None]]:
    """(subject, session) pairs present in the input dataset (none without one); session None
    when unused."""
    pairs: list[tuple[str, str | None]] = []
    if bids_dir is None:
        return pairs
    for sub_dir in sorted(Path(bids_dir).glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        subject = sub_dir.name[4:]
        sessions = sorted(d.name[4:] for d in sub_dir.glob("ses-*") if d.is_dir())
        pairs.extend((subject, ses) for ses in sessions or [None])
    return pairs


def _missing_reason(bids_dir: Path, subject: str, session: str | None) -> str:
    """Why a run without outputs and without crash file has none, from the input."""
    folder = Path(bids_dir) / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    has = {suffix: any(folder.glob(f"*_{suffix}.nii*")) for suffix in ("T1w", "FLAIR")}
    absent = [suffix for suffix, present in has.items() if not present]
    if absent:
        return f"no {' or '.join(absent)} image in the input dataset"
    return "no participant outputs (not run, or still running)"


def find_failures(
    bids_dir: Path | None,
    output_dir: Path,
    runs: list[ParticipantRun],
    *,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
) -> list[Failure]:
    """Input subject/sessions without results, and results that a later crash makes suspect.

    Crash files live per subject (``sub-X/log/<run>/``). One counts against a
    subject/session when it is newer than that session's synthesized map (or
    there is no map), since an older one was left by a run that a rerun has
    completed, and when it names that session or names none.
    """
    done = {(run.subject, run.session): run for run in runs}
    wanted = [
        (sub, ses)
        for sub, ses in input_sessions(bids_dir)
        if (not participant_label or sub in participant_label)
        and (not session_label or ses in session_label)
    ]
    failures = []
    for subject, session in sorted(set(wanted) | set(done), key=lambda p: (p[0], p[1] or "")):
        run = done.get((subject, session))
        finished = run.psr.stat().st_mtime if run else float("-inf")
        fresh = [
            c
            for c in find_crashes(output_dir, subject)
            if c.mtime > finished and c.concerns(session)
        ]
        if fresh:
            crash = fresh[-1]
            failures.append(
                Failure(
                    subject, session, "failed", crash.error, crash_file=crash.path, node=crash.node
                )
            )
        elif run is None:
            failures.append(
                Failure(subject, session, "missing", _missing_reason(bids_dir, subject, session))
            )
    return failures


def find_derivative_file(
    root: Path, subject: str, session: str | None, pattern: str, *, exclude: tuple[str, ...] = ()
) -> list[Path]:
    """Files of one subject/session under a derivatives root matching a glob on the name.

    With a session, files naming that session are preferred and files naming no
    session are accepted when none do; files of another session never match.
    """
    candidates = sorted(Path(root).glob(f"sub-{subject}/**/{pattern}"))
    candidates = [
        p
        for p in candidates
        if entities(p.name).get("sub") == subject and not any(word in p.name for word in exclude)
    ]
    if session is None:
        return [p for p in candidates if "ses" not in entities(p.name)]
    same = [p for p in candidates if entities(p.name).get("ses") == session]
    return same or [p for p in candidates if "ses" not in entities(p.name)]


def read_participants(bids_dir: Path):
    """``participants.tsv`` as a DataFrame indexed by subject label (no ``sub-``), or None."""
    import pandas as pd

    path = Path(bids_dir) / "participants.tsv"
    if not path.exists():
        return None
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a", ""])
    if "participant_id" not in table.columns:
        LOGGER.warning("%s has no participant_id column; ignoring it", path)
        return None
    table["participant_id"] = table["participant_id"].str.removeprefix("sub-")
    return table.set_index("participant_id")
