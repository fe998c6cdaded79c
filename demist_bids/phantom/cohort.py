"""Generate a synthetic MS cohort as a BIDS dataset: :func:`generate_cohort`.

The layout (raw T1w and FLAIR, ``derivatives/qmt`` PSR maps,
``derivatives/lesions`` lesion masks, ``derivatives/phantom`` truth) is
described in :mod:`demist_bids.phantom.dataset`.

Determinism: every random draw comes from a generator seeded by
``(seed, subject index, stream)``, so the same arguments give byte-identical
files, and subject ``k``'s anatomy does not depend on how many subjects follow.
Which subjects are controls depends on ``seed`` and ``subjects``.

Atomicity: the dataset is built in a hidden folder beside ``out_dir`` and
renamed into place only when complete; a failure removes it and leaves
``out_dir`` as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demist_bids.exceptions import OutputNotWritableError, UsageError

from .acquisition import acquire_flair, acquire_t1w, draw_motion
from .anatomy import subject_anatomy
from .contrast import flair_signal, t1w_signal
from .dataset import write_dataset_files, write_session
from .lesions import Lesion, draw_lesions, evolve
from .psr import MyelinState, draw_myelin, measured_psr
from .template import CanonicalHead, canonical_head
from .warp import SubjectWarp, subject_warp

LOGGER = logging.getLogger("demist.phantom")

MIN_SCALE, MAX_SCALE = 0.2, 1.5
# Independent random streams per subject.
STREAM_WARP, STREAM_LESIONS, STREAM_MYELIN, STREAM_HEAD, STREAM_ATROPHY = 0, 1, 2, 3, 4
STREAM_SESSION = 100


@dataclass(frozen=True)
class Participant:
    """A row of ``participants.tsv`` plus the subject's index in the cohort."""

    index: int
    label: str
    group: str  # "MS" or "control"
    age: int
    sex: str


@dataclass(frozen=True)
class PhantomScan:
    """One generated session: where its files are and what is in them.

    Paths are absolute, inside the final ``out_dir``. ``flair_to_t1w`` is the
    true 4x4 FLAIR-world -> T1w-world matrix (RAS+ mm; see
    :mod:`demist_bids.phantom.acquisition`), also stored in ``transform``.
    """

    subject: str
    session: str | None
    group: str
    t1w: Path
    flair: Path
    psr: Path
    lesion_mask: Path
    brain_mask: Path
    dseg: Path
    transform: Path
    flair_to_t1w: np.ndarray
    n_lesions: int
    lesion_volume_ml: float
    nawm_psr: float


def plan_participants(subjects: int, seed: int, control_fraction: float) -> list[Participant]:
    """Labels, groups (``round(subjects * control_fraction)`` controls) and demographics."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    n_controls = int(round(subjects * control_fraction))
    controls = set(rng.permutation(subjects)[:n_controls].tolist())
    width = max(2, len(str(subjects)))
    participants = []
    for index in range(subjects):
        control = index in controls
        age = rng.normal(38.0, 11.0) if control else rng.normal(43.0, 10.0)
        female = rng.uniform() < (0.6 if control else 0.7)
        participants.append(
            Participant(
                index=index,
                label=f"{index + 1:0{width}d}",
                group="control" if control else "MS",
                age=int(np.clip(round(age), 18, 70)),
                sex="F" if female else "M",
            )
        )
    return participants


def _lesion_history(
    participant: Participant, sessions: int, seed: int, head: CanonicalHead
) -> list[list[Lesion]]:
    """The patient's lesions at each session (empty lists for a control)."""
    if participant.group == "control":
        return [[] for _ in range(sessions)]
    rng = np.random.default_rng([seed, participant.index, STREAM_LESIONS])
    history = [draw_lesions(rng, head.zones)]
    for _ in range(1, sessions):
        history.append(evolve(history[-1], rng, head.zones))
    return history


def _canonical_load_ml(lesions: list[Lesion]) -> float:
    return float(sum(4.0 / 3.0 * np.pi * np.prod(lesion.radii) for lesion in lesions) / 1000.0)


def _t1w_affine(head: CanonicalHead, scale: float) -> np.ndarray:
    """RAS 1 mm grid whose world coordinates are the canonical ones times ``scale``."""
    affine = head.affine.copy()
    affine[:3, 3] *= scale
    return affine


def subject_stream(seed: int, participant: Participant, number: int) -> np.random.Generator:
    """The participant's independent random stream ``number`` (``STREAM_*``)."""
    return np.random.default_rng([seed, participant.index, number])


@dataclass(frozen=True)
class SubjectState:
    """What every session of a participant is drawn from."""

    warp: SubjectWarp  # the canonical head deformed into this subject's anatomy
    history: list[list[Lesion]]  # the lesions at each session
    myelin: MyelinState  # hidden from the images: WM/GM PSR levels and the smooth myelin field
    lesion_load_ml: float  # at the first session, in the canonical head (what the myelin draw saw)


def subject_state(
    head: CanonicalHead, participant: Participant, *, seed: int, sessions: int, scale: float
) -> SubjectState:
    """The participant's warp, lesion history and myelin state (deterministic in ``seed``)."""

    def stream(number: int) -> np.random.Generator:
        return subject_stream(seed, participant, number)

    patient = participant.group == "MS"
    atrophy = stream(STREAM_ATROPHY).uniform(0.04, 0.15) if patient else 0.0
    atrophy += stream(STREAM_ATROPHY + 1).uniform(0.0, 0.04)  # ageing, everyone
    warp = subject_warp(
        head.shape,
        head.center,
        scale,
        stream(STREAM_WARP),
        atrophy=atrophy,
        atrophy_center=head.ventricle_center,
    )
    history = _lesion_history(participant, sessions, seed, head)
    load = _canonical_load_ml(history[0])
    myelin = draw_myelin(warp.shape, stream(STREAM_MYELIN), patient=patient, lesion_load=load)
    return SubjectState(warp, history, myelin, load)


def _generate_participant(
    root: Path,
    head: CanonicalHead,
    participant: Participant,
    *,
    seed: int,
    sessions: int,
    scale: float,
) -> list[PhantomScan]:
    def stream(number: int) -> np.random.Generator:
        return subject_stream(seed, participant, number)

    state = subject_state(head, participant, seed=seed, sessions=sessions, scale=scale)
    warp, history, myelin = state.warp, state.history, state.myelin
    affine = _t1w_affine(head, scale)
    center_world = (affine @ np.append(head.center * scale, 1.0))[:3]
    scans = []
    for number, lesions in enumerate(history, start=1):
        session = f"{number:02d}" if sessions > 1 else None
        rng = stream(STREAM_SESSION + number)
        anatomy = subject_anatomy(head, warp, lesions, stream(STREAM_HEAD), scale=scale)
        lesion_mask = anatomy.lesion_mask
        images = {
            "psr": measured_psr(anatomy, myelin, rng),
            "t1w": acquire_t1w(t1w_signal(anatomy, myelin, rng), affine, rng),
            "lesion_mask": lesion_mask,
            "brain_mask": anatomy.brain_mask,
            "dseg": anatomy.dseg(),
        }
        motion = draw_motion(rng, center_world)
        images["flair"] = acquire_flair(flair_signal(anatomy, rng), affine, motion, scale, rng)
        paths = write_session(root, participant.label, session, images, motion)
        nawm = (anatomy.tissue["wm"] > 0.9) & (anatomy.lesion["psr_loss"] < 0.01)
        scans.append(
            PhantomScan(
                subject=participant.label,
                session=session,
                group=participant.group,
                flair_to_t1w=motion.flair_to_t1w(),
                n_lesions=len(lesions),
                lesion_volume_ml=float(lesion_mask.sum()) / 1000.0,
                nawm_psr=float(np.median(images["psr"][nawm])) if nawm.any() else float("nan"),
                **paths,
            )
        )
    return scans


def _check_arguments(subjects: int, sessions: int, control_fraction: float, scale: float) -> None:
    if subjects < 1:
        raise UsageError(f"--subjects must be at least 1 (got {subjects})")
    if sessions < 1:
        raise UsageError(f"--sessions must be at least 1 (got {sessions})")
    if not 0.0 <= control_fraction <= 1.0:
        raise UsageError(f"--control-fraction must lie in [0, 1] (got {control_fraction})")
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"--scale must lie in [{MIN_SCALE}, {MAX_SCALE}] (got {scale})")


def _install(built: Path, out_dir: Path) -> None:
    """Move the finished dataset into place, replacing what ``out_dir`` held."""
    if out_dir.exists():
        trash = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent)
        )
        os.replace(out_dir, trash / out_dir.name)
        os.replace(built, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(built, out_dir)


def generate_cohort(
    out_dir: Path,
    *,
    subjects: int,
    seed: int,
    sessions: int = 1,
    control_fraction: float = 0.3,
    scale: float = 1.0,
    overwrite: bool = False,
) -> list[PhantomScan]:
    """Write a synthetic MS cohort as a BIDS dataset at ``out_dir``; return its scans.

    Raises:
        UsageError: bad arguments, or ``out_dir`` is not empty and ``overwrite`` is False.
        OutputNotWritableError: the parent of ``out_dir`` cannot be written.
    """
    _check_arguments(subjects, sessions, control_fraction, scale)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UsageError(f"{out_dir} is not empty; choose another folder or pass --overwrite")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        built = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
        )
    except OSError as error:
        raise OutputNotWritableError(
            f"cannot create a dataset beside {out_dir}: {error}"
        ) from error
    try:
        participants = plan_participants(subjects, seed, control_fraction)
        write_dataset_files(
            built,
            [[f"sub-{p.label}", p.group, p.age, p.sex] for p in participants],
            seed=seed,
            sessions=sessions,
        )
        head = canonical_head()
        scans = []
        for participant in participants:
            start = time.perf_counter()
            scans += _generate_participant(
                built, head, participant, seed=seed, sessions=sessions, scale=scale
            )
            LOGGER.info(
                "sub-%s (%s): %.1f s",
                participant.label,
                participant.group,
                time.perf_counter() - start,
            )
        os.chmod(built, 0o755)
        _install(built, out_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return [_rebased(scan, built, out_dir) for scan in scans]


def _rebased(scan: PhantomScan, old: Path, new: Path) -> PhantomScan:
    """The same scan with its paths moved from the build folder to ``out_dir``."""
    fields = {
        name: new / getattr(scan, name).relative_to(old)
        for name in ("t1w", "flair", "psr", "lesion_mask", "brain_mask", "dseg", "transform")
    }
    return PhantomScan(**{**scan.__dict__, **fields})
