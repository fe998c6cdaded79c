"""Training volumes in memory: what the loops sample patches from.

One :class:`TrainingVolume` per scan, all on the model's 1 mm grid: T1w and
FLAIR already scaled to [0, 1] by preprocessing, the measured PSR in PSR units,
the brain mask, and (for evaluation) lesion and white-matter masks. Loading
takes file paths only; which files they are is the BIDS layer's business
(:mod:`demist_bids.workflows.cohort`).

The PSR target is divided by one cohort-wide constant (:func:`cohort_psr_scale`)
and never rescaled per subject, so between-subject differences survive
(REFERENCE section 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # a dataclass of paths; importing it at run time would pull Nipype into the sampler's imports
    from demist_bids.workflows.cohort import VolumePaths

PSR_SCALE_PERCENTILE = 99.9
"""Percentile of PSR over all training brain voxels that maps to 1.0 (the sampler clamps
to [0, 1], so only the top 0.1% of training values can saturate)."""


@dataclass
class TrainingVolume:
    """One scan's arrays on the model grid.

    Attributes:
        cond: 2 x X x Y x Z float32 (T1w, FLAIR) in [0, 1].
        psr: X x Y x Z float32 in PSR units.
        brain: X x Y x Z bool.
    """

    name: str
    cond: np.ndarray
    psr: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None = None
    wm: np.ndarray | None = None
    affine: np.ndarray | None = None


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def load_volume(paths: VolumePaths) -> TrainingVolume:
    """Read one scan; images must share the grid of the preprocessed T1w."""
    t1w, affine = _read(paths.t1w)
    flair, _ = _read(paths.flair)
    brain = _read(paths.brain_mask)[0] > 0
    psr = np.nan_to_num(_read(paths.psr)[0], nan=0.0)
    shapes = {t1w.shape, flair.shape, brain.shape, psr.shape}
    if len(shapes) != 1:
        raise ValueError(f"{paths.name}: training images are on different grids {shapes}")
    lesion = _read(paths.lesion_mask)[0] > 0 if paths.lesion_mask else None
    wm = _read(paths.wm_mask)[0] > 0 if paths.wm_mask else None
    cond = np.stack([t1w, flair]) * brain
    return TrainingVolume(paths.name, cond.astype(np.float32), psr * brain, brain, lesion, wm, affine)


def cohort_psr_scale(volumes: Sequence[TrainingVolume], percentile: float = PSR_SCALE_PERCENTILE) -> float:
    """The one PSR value mapped to 1.0: a high percentile over all training brain voxels."""
    values = np.concatenate([v.psr[v.brain] for v in volumes])
    scale = float(np.percentile(values, percentile))
    if not scale > 0:
        raise ValueError("the training PSR maps are zero inside the brain")
    return scale
