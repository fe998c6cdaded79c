"""Quality measures of one subject's preprocessing (written to the ``qc`` JSON)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from .tissues import WM


def mask_volume_ml(mask: nib.spatialimages.SpatialImage) -> float:
    """Volume of a binary mask in millilitres."""
    voxel = float(np.abs(np.linalg.det(mask.affine[:3, :3])))
    return float((np.asanyarray(mask.dataobj) > 0).sum() * voxel / 1000.0)


def tissue_snr(img: nib.spatialimages.SpatialImage, dseg: nib.spatialimages.SpatialImage,
               label: int = WM) -> float:
    """Mean / standard deviation of intensity inside one tissue class (MRIQC's tissue SNR).

    Computed inside white matter by default, the largest and most homogeneous class, so it
    also works for skull-stripped input that has no background left to measure noise in.
    """
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    values = data[np.asanyarray(dseg.dataobj) == label]
    if values.size < 2 or float(values.std()) == 0.0:
        return float("nan")
    return float(values.mean() / values.std())


def coverage(fov_mask: nib.spatialimages.SpatialImage,
             brain_mask: nib.spatialimages.SpatialImage) -> float:
    """Fraction of the brain mask's voxels inside a field-of-view mask on the same grid."""
    brain = np.asanyarray(brain_mask.dataobj) > 0
    if not brain.any():
        return 0.0
    return float((np.asanyarray(fov_mask.dataobj)[brain] > 0).mean())
