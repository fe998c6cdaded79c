"""N4 intensity non-uniformity correction (Tustison et al. 2010) with SimpleITK.

The bias field is estimated on a copy shrunk to about ``shrink_mm`` voxels
(the field is smooth, so this loses nothing and is ~50x faster), then
evaluated at full resolution and divided out.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from .sitk_bridge import to_nibabel, to_sitk

LOGGER = logging.getLogger("demist.preprocessing")


def head_mask(image):
    """Otsu foreground of a (shrunk) SimpleITK image, closed: where N4 fits the field."""
    import SimpleITK as sitk

    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    return sitk.BinaryMorphologicalClosing(mask, [1, 1, 1])


def n4_correct(
    img: nib.spatialimages.SpatialImage,
    *,
    shrink_mm: float = 8.0,
    iterations: tuple[int, ...] = (50, 50, 30),
    convergence: float = 1e-3,
    spline_distance_mm: float = 100.0,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Correct the intensity non-uniformity of ``img``.

    Args:
        img: a validated 3D image (no negatives).
        shrink_mm: voxel size (mm) at which the field is fitted; each axis is
            shrunk by ``round(shrink_mm / spacing)``, so anisotropic data stay sane.
        iterations: iterations per fitting level (one level per entry).
        convergence: stop a level when the field's coefficient of variation changes less
            (1e-3, SimpleITK's default; 1e-6 doubles the time and changes the
            field by 1.5 % rms on the phantom).
        spline_distance_mm: B-spline control point spacing of the field.

    Returns:
        ``(corrected, bias_field)`` on ``img``'s grid, float32.
    """
    import SimpleITK as sitk

    image = to_sitk(img)
    # N4 takes logs: keep strictly positive values inside the fitted region
    image = sitk.Maximum(image, 0.0)
    shrink = [max(1, int(round(shrink_mm / s))) for s in image.GetSpacing()]
    small = sitk.Shrink(image, shrink)
    small_mask = head_mask(small)
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    control_points = [max(4, int(np.ceil(e / spline_distance_mm)) + 3) for e in extent]

    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfControlPoints(control_points)
    n4.SetConvergenceThreshold(convergence)
    # small positive offset: N4 ignores voxels with value <= 0 inside the mask
    n4.Execute(small + 1e-3, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(image)
    field = sitk.Exp(log_field)
    corrected = sitk.Divide(image, field)
    LOGGER.debug("N4: shrink %s, %d levels, control points %s", shrink, len(iterations),
                 control_points)
    return to_nibabel(corrected), to_nibabel(field)
