"""Find each subject's (and session's) T1w and FLAIR with pybids.

The selection rule, applied separately to T1w and FLAIR when several images
match one subject/session (``acq-``, ``rec-``, ``run-``, ``task-``...):

1. the ``--bids-filter-file`` entries for ``t1w``/``flair`` are merged into the
   query (they replace the defaults key by key, as in fMRIPrep);
2. among what is left, demist prefers the image with the fewest entities
   besides subject and session (the plain acquisition);
3. then the highest ``run`` (a repeated acquisition is usually the re-take);
4. then the alphabetically first file name.
Every choice, and what was skipped, is logged. The rule is deterministic: the
same dataset always gives the same inputs.

Derivative inputs are matched by subject and session: a brain mask
(``desc-brain_mask``) from ``-d smriprep=PATH``, lesion masks (any ``*_mask``)
from ``-d lesions=PATH`` (default: ``BIDS_DIR/derivatives/lesions`` if it
exists), and measured PSR maps (``*_PSRmap``) from ``--psr-derivatives`` (default:
any dataset under ``BIDS_DIR/derivatives`` holding PSR maps).

This module knows pybids and nothing about torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demist_bids.bids import scan_prefix
from demist_bids.exceptions import NothingSelectedError

LOGGER = logging.getLogger("demist.bids")
NIFTI = [".nii", ".nii.gz"]
DEFAULT_QUERIES: dict[str, dict[str, Any]] = {
    "t1w": {"datatype": "anat", "suffix": "T1w", "extension": NIFTI},
    "flair": {"datatype": "anat", "suffix": "FLAIR", "extension": NIFTI},
}
_BASE_ENTITIES = {"subject", "session", "suffix", "extension", "datatype"}


@dataclass(frozen=True)
class AnatInputs:
    """Everything demist uses for one subject (and session)."""

    subject: str
    session: str | None
    t1w: Path
    flair: Path
    brain_mask: Path | None = None
    lesion_mask: Path | None = None
    psr: Path | None = None
    t1w_metadata: dict = field(default_factory=dict, compare=False, hash=False)
    """The T1w's sidecar metadata (pybids ``get_metadata``: inheritance applied)."""
    flair_metadata: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def bids_name(self) -> str:
        """``sub-X`` or ``sub-X_ses-Y``: the prefix of every output file."""
        return scan_prefix(self.subject, self.session)


@dataclass(frozen=True)
class MissingInput:
    """A subject/session that lacks a required image."""

    subject: str
    session: str | None
    suffix: str

    @property
    def message(self) -> str:
        where = f"sub-{self.subject}" + (f" ses-{self.session}" if self.session else "")
        return f"{where} has no {self.suffix} image; it is skipped"


def _index_fingerprint(root: Path) -> str:
    """Hash of the dataset's file names and sizes: a changed dataset gets a fresh index."""
    digest = hashlib.sha256(str(root).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in {"derivatives", "sourcedata", ".git"})
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            digest.update(f"{path.relative_to(root)}\0{size}\n".encode())
    return digest.hexdigest()[:16]


def load_layout(bids_dir: Path, work_dir: Path | None = None):
    """A pybids layout of the raw dataset, its index cached in ``work_dir``."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(validate=False, ignore=["derivatives", "sourcedata", "code"])
    kwargs: dict[str, Any] = {"validate": False, "indexer": indexer}
    if work_dir is not None:
        db = Path(work_dir) / "bids_db" / _index_fingerprint(Path(bids_dir))
        kwargs["database_path"] = db
        if db.exists():
            LOGGER.debug("reusing the pybids index in %s", db)
    return BIDSLayout(str(bids_dir), **kwargs)


def _derivative_layout(path: Path):
    from bids import BIDSLayout

    return BIDSLayout(str(path), validate=False, is_derivative=True, config=["bids", "derivatives"])


def _pick(files: list, kind: str, where: str):
    """Apply the documented selection rule to several candidate images."""

    def key(f):
        ents = f.get_entities()
        extra = len(set(ents) - _BASE_ENTITIES)
        run = int(ents.get("run", 0) or 0)
        return (extra, -run, Path(f.path).name)

    ranked = sorted(files, key=key)
    if len(ranked) > 1:
        LOGGER.info(
            "%s: %d %s images match; using %s (skipped: %s). Use --bids-filter-file to choose.",
            where, len(ranked), kind, Path(ranked[0].path).name,
            ", ".join(Path(f.path).name for f in ranked[1:4])
            + (f" and {len(ranked) - 4} more" if len(ranked) > 4 else ""),
        )
    return Path(ranked[0].path)


def _match_derivative(layout, suffix: str, subject: str, session: str | None, **extra) -> Path | None:
    if layout is None:
        return None
    from bids.layout import Query

    query = {"subject": subject, "suffix": suffix, "extension": NIFTI, **extra}
    query["session"] = session if session else Query.NONE
    hits = sorted(layout.get(return_type="filename", **query))
    if not hits:
        return None
    if len(hits) > 1:
        LOGGER.info("several %s files for sub-%s; using %s", suffix, subject, Path(hits[0]).name)
    return Path(hits[0])


def default_psr_derivatives(bids_dir: Path, *, exclude: Path | None = None) -> Path | None:
    """The first dataset in ``BIDS_DIR/derivatives`` holding *measured* PSR maps.

    demist's own outputs (``desc-synth``/``desc-std`` maps, or the dataset at
    ``exclude``) never count as measured. Plain file-system search: no pybids.
    """
    root = Path(bids_dir) / "derivatives"
    if not root.is_dir():
        return None
    skip = Path(exclude).resolve() if exclude is not None else None
    for candidate in sorted(p for p in root.iterdir() if p.is_dir()):
        if candidate.resolve() == skip:
            continue
        if (candidate / "dataset_description.json").is_file() and any(
            "desc-synth" not in p.name and "desc-std" not in p.name
            for p in candidate.rglob("*_PSRmap.nii*")
        ):
            return candidate
    return None


def _psr_layout(bids_dir: Path, psr_derivatives: Path | None):
    root = psr_derivatives or default_psr_derivatives(bids_dir)
    return _derivative_layout(root) if root is not None else None


def collect_inputs(
    bids_dir: Path,
    *,
    work_dir: Path | None = None,
    participant_label: list[str] | tuple[str, ...] = (),
    session_label: list[str] | tuple[str, ...] = (),
    bids_filter: dict[str, dict] | None = None,
    derivatives: dict[str, Path] | None = None,
    psr_derivatives: Path | None = None,
) -> tuple[list[AnatInputs], list[MissingInput]]:
    """Pair up T1w and FLAIR per subject/session.

    Returns:
        The usable inputs, and the subjects/sessions that lack an image.

    Raises:
        NothingSelectedError: the labels or filters select no subject or no image (18).
    """
    layout = load_layout(bids_dir, work_dir)
    derivatives = dict(derivatives or {})
    subjects = sorted(layout.get_subjects())
    if participant_label:
        absent = [s for s in participant_label if s not in subjects]
        if absent:
            raise NothingSelectedError(
                "no such participant(s) in the dataset: "
                + ", ".join(f"sub-{s}" for s in absent)
            )
        subjects = [s for s in subjects if s in participant_label]
    if not subjects:
        raise NothingSelectedError(f"{bids_dir} holds no subjects")

    queries = {k: dict(v) for k, v in DEFAULT_QUERIES.items()}
    for kind, extra in (bids_filter or {}).items():
        queries[kind].update(extra)

    smriprep = derivatives.get("smriprep")
    lesions = derivatives.get("lesions")
    if lesions is None and (Path(bids_dir) / "derivatives" / "lesions").is_dir():
        lesions = Path(bids_dir) / "derivatives" / "lesions"
    mask_layout = _derivative_layout(smriprep) if smriprep else None
    lesion_layout = _derivative_layout(lesions) if lesions else None
    psr_layout = _psr_layout(Path(bids_dir), psr_derivatives)

    found: list[AnatInputs] = []
    missing: list[MissingInput] = []
    any_session_selected = False
    for subject in subjects:
        sessions = sorted(layout.get_sessions(subject=subject)) or [None]
        if session_label:
            sessions = [s for s in sessions if s in session_label]
        for session in sessions:
            any_session_selected = True
            where = scan_prefix(subject, session)
            picked: dict[str, Path] = {}
            for kind, query in queries.items():
                q = {"subject": subject, **query}
                if session is not None:
                    q["session"] = session
                files = layout.get(**q)
                if not files:
                    missing.append(MissingInput(subject, session, query.get("suffix", kind)))
                    continue
                picked[kind] = _pick(files, kind, where)
            if len(picked) < len(queries):
                continue
            found.append(
                AnatInputs(
                    subject=subject,
                    session=session,
                    t1w=picked["t1w"],
                    flair=picked["flair"],
                    brain_mask=_match_derivative(
                        mask_layout, "mask", subject, session, desc="brain"
                    ),
                    lesion_mask=_match_derivative(lesion_layout, "mask", subject, session),
                    psr=_match_derivative(psr_layout, "PSRmap", subject, session),
                    t1w_metadata=layout.get_metadata(str(picked["t1w"])),
                    flair_metadata=layout.get_metadata(str(picked["flair"])),
                )
            )
    if not any_session_selected:
        raise NothingSelectedError(
            "no session matches --session-label " + " ".join(session_label)
        )
    if not found and not missing:
        raise NothingSelectedError("the filters selected no T1w/FLAIR images")
    if (bids_filter and not found) and all(
        m.suffix in {q.get("suffix") for q in queries.values()} for m in missing
    ):
        # Every subject lost an image: with custom filters this means they matched nothing.
        raise NothingSelectedError(
            "the --bids-filter-file filters selected no images: "
            + "; ".join(m.message for m in missing[:5])
        )
    return found, missing
