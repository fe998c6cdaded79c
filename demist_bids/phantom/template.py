"""The canonical head every phantom subject is deformed from.

Real anatomy comes from the ICBM 2009a symmetric MNI152 template that nilearn
ships in its wheel (``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted``:
skull-stripped T1 and grey/white-matter probability maps, 197x233x189 at 1 mm).
From them we derive, once per process:

- tissue fractions: grey matter, white matter and CSF, where CSF is the brain
  (template T1 > 0, or GM + WM) minus GM and WM, which yields ventricles and
  sulcal CSF;
- a *texture* map: the part of the template T1 intensity that the tissue
  fractions do not explain (deep-grey-nucleus contrast, myelin-rich tracts),
  in units of the white-matter intensity. The phantom's T1w and PSR both carry
  part of it, so they share real anatomical detail beyond three tissue classes;
- on a 2 mm grid, distances (mm) outside the brain (for the skull and scalp
  shell) and the lesion candidate zones: periventricular, juxtacortical and
  deep white matter.

The grid is the template cropped to the brain's bounding box plus a margin wide
enough for a skull and scalp; at the bottom, where the template cuts through the
brainstem, the last slice is repeated so the brainstem continues into the neck.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

LOGGER = logging.getLogger("demist.phantom")

TEMPLATE_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
#: Margin (mm) kept around the brain for the skull, scalp and deformation.
HEAD_MARGIN_MM = 20
#: Slices of brainstem repeated below the template's bottom edge (mm).
NECK_MM = 10
#: Resolution (mm) of the distance maps and lesion zones.
COARSE_MM = 2


@dataclass(frozen=True)
class CanonicalHead:
    """Tissue maps of the canonical head on its 1 mm grid (arrays are read-only).

    ``gm``, ``wm``, ``csf`` are tissue fractions in [0, 1] summing to at most 1;
    ``texture`` is the unexplained template-T1 contrast (WM intensity = 1);
    ``distance_outside`` is the distance (mm) from the brain on the coarse grid;
    ``zones`` maps a lesion zone name to candidate centres (N x 3, voxel
    coordinates on the 1 mm grid); ``center`` is the brain's centroid (voxels);
    ``brain_box`` the slices of the brain's bounding box, outside which the
    tissue maps and texture are zero; ``ventricle_center`` the lateral
    ventricles' centroid (voxels), the centre of atrophy.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    texture: np.ndarray
    distance_outside: np.ndarray
    zones: dict[str, np.ndarray]
    center: np.ndarray
    affine: np.ndarray
    brain_box: tuple[slice, slice, slice]
    ventricle_center: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.gm.shape)


def template_dir() -> Path:
    """Where nilearn keeps the MNI152 templates inside its installed package."""
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


def _load(kind: str) -> tuple[np.ndarray, np.ndarray]:
    from demist_bids.utils.image_check import check_image_file

    # a damaged nilearn install is exit 65 naming the file, not an EOFError mid-cohort
    image = check_image_file(template_dir() / TEMPLATE_NAME.format(kind))
    return np.asanyarray(image.dataobj).astype(np.float32) / 255.0, image.affine


def _crop_to_head(volumes: list[np.ndarray], brain: np.ndarray, affine: np.ndarray):
    """Crop to the brain box plus margin; repeat the bottom slice as a neck."""
    index = np.argwhere(brain)
    low = np.maximum(index.min(0) - HEAD_MARGIN_MM, 0)
    high = np.minimum(index.max(0) + HEAD_MARGIN_MM + 1, brain.shape)
    slices = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    neck = NECK_MM if low[2] == 0 else 0
    cropped = [np.pad(v[slices], ((0, 0), (0, 0), (neck, 0)), mode="edge") for v in volumes]
    shift = np.eye(4)
    shift[:3, 3] = low - np.array([0, 0, neck])
    return cropped, affine @ shift


def _texture(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, brain: np.ndarray):
    """Template T1 minus its least-squares fit by the tissue fractions, in WM units."""
    design = np.stack([gm[brain], wm[brain], csf[brain]], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, t1[brain], rcond=None)
    texture = np.zeros_like(t1)
    texture[brain] = (t1[brain] - design @ coefficients) / max(coefficients[1], 1e-3)
    return np.clip(texture, -0.3, 0.3)


def _lesion_zones(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, brain: np.ndarray):
    """Candidate lesion centres per zone and the lateral ventricles' centroid (voxels)."""
    step = COARSE_MM
    sub = (slice(None, None, step),) * 3
    brain_c, wm_c, gm_c, csf_c = brain[sub], wm[sub] > 0.6, gm[sub] > 0.5, csf[sub]
    depth = ndi.distance_transform_edt(brain_c) * step
    ventricles = (csf_c > 0.6) & (depth > 22)
    labels, n = ndi.label(ventricles)
    if n > 1:  # keep the large components (lateral ventricles), drop deep sulci
        sizes = ndi.sum(ventricles, labels, index=np.arange(1, n + 1))
        ventricles = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.1 * sizes.max()))
    to_ventricle = ndi.distance_transform_edt(~ventricles) * step
    to_grey = ndi.distance_transform_edt(~gm_c) * step
    zones = {
        "periventricular": wm_c & (to_ventricle >= 1.0) & (to_ventricle <= 5.0),
        "juxtacortical": wm_c & (to_grey >= 1.0) & (to_grey <= 3.0) & (depth < 20),
        "deep": wm_c & (to_ventricle > 9.0) & (to_grey > 4.0),
    }
    centres = {name: (np.argwhere(mask) * step).astype(np.float32) for name, mask in zones.items()}
    return centres, np.argwhere(ventricles).mean(0) * step


@functools.lru_cache(maxsize=1)
def canonical_head() -> CanonicalHead:
    """Build (once per process) the canonical head from nilearn's MNI152 maps."""
    t1, affine = _load("t1")
    gm, _ = _load("gm")
    wm, _ = _load("wm")
    brain = (t1 > 0) | (gm + wm > 0.5)
    (t1, gm, wm, brain_f), affine = _crop_to_head(
        [t1, gm, wm, brain.astype(np.float32)], brain, affine
    )
    brain = brain_f > 0.5
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    gm *= brain
    wm *= brain
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    texture = _texture(t1, gm, wm, csf, brain)
    coarse_brain = brain[(slice(None, None, COARSE_MM),) * 3]
    distance_outside = (ndi.distance_transform_edt(~coarse_brain) * COARSE_MM).astype(np.float32)
    zones, ventricle_center = _lesion_zones(gm, wm, csf, brain)
    index = np.argwhere(brain)
    center = index.mean(0)
    brain_box = tuple(slice(lo, hi + 1) for lo, hi in zip(index.min(0), index.max(0)))
    LOGGER.debug("canonical head %s, zones %s", gm.shape, {k: len(v) for k, v in zones.items()})
    for array in (gm, wm, csf, texture, distance_outside):
        array.setflags(write=False)
    return CanonicalHead(
        gm, wm, csf, texture, distance_outside, zones, center, affine, brain_box, ventricle_center
    )
