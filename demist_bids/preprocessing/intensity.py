"""Per-subject intensity scaling of T1w and FLAIR to [0, 1] (DEMIST's input convention).

Each contrast is mapped linearly from its 0th to its 99.5th percentile inside
the brain to [0, 1] and clipped: T1w and FLAIR carry no absolute scale, so a
per-subject range is right for them (never for the PSR target; REFERENCE §1).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

LOWER_PERCENTILE = 0.0
UPPER_PERCENTILE = 99.5


def percentile_scale(
    img: nib.spatialimages.SpatialImage,
    brain_mask: nib.spatialimages.SpatialImage,
    *,
    lower: float = LOWER_PERCENTILE,
    upper: float = UPPER_PERCENTILE,
    mask_output: bool = True,
) -> tuple[nib.Nifti1Image, tuple[float, float]]:
    """Scale ``img`` to [0, 1] with percentiles taken inside ``brain_mask``.

    Args:
        img: image on the same grid as ``brain_mask``.
        brain_mask: where the percentiles are computed.
        lower, upper: percentiles mapped to 0 and 1.
        mask_output: zero outside the brain (same input for skull-stripped and raw data).

    Returns:
        The float32 image and the ``(low, high)`` intensities that were mapped to 0 and 1.
    """
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    mask = np.asanyarray(brain_mask.dataobj) > 0
    if not mask.any():
        raise ValueError("empty brain mask: nothing to take percentiles from")
    low, high = (float(v) for v in np.percentile(data[mask], [lower, upper]))
    if high <= low:
        raise ValueError(f"degenerate intensity range inside the brain ({low}, {high})")
    scaled = np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if mask_output:
        scaled[~mask] = 0.0
    out = nib.Nifti1Image(scaled, img.affine)
    out.set_data_dtype(np.float32)
    return out, (low, high)
