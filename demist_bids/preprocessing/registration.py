"""Rigid, mutual-information registration of one contrast to another with SimpleITK.

Both images are first brought to an isotropic working grid (smoothed, then
resampled), because ITK's pyramid shrinks every axis by the same factor and
clinical 2D acquisitions (0.7 x 0.7 x 4 mm) would otherwise lose their slices
at the coarse levels. Mattes mutual information (Mattes et al. 2003) suits
images of different contrasts; the pyramid runs coarse to fine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from .grids import ras_grid
from .sitk_bridge import reference_image, to_sitk

LOGGER = logging.getLogger("demist.preprocessing")


@dataclass
class RegistrationResult:
    """The rigid transform (ITK convention: fixed points -> moving points, LPS) and its cost."""

    transform: object
    """A ``SimpleITK.Euler3DTransform``."""
    final_metric: float
    """Mattes mutual information at the end (negative: lower is better)."""
    iterations: int
    """Optimizer iterations at the last level."""
    stop_condition: str
    """The optimizer's reason to stop."""


def working_image(img: nib.spatialimages.SpatialImage, voxel_mm: float):
    """``img`` smoothed to ``voxel_mm`` resolution, resampled on an isotropic world-aligned grid."""
    import SimpleITK as sitk

    image = to_sitk(img)
    spacing = np.array(image.GetSpacing())
    # Gaussian anti-aliasing only along the axes that get coarser
    sigmas = np.sqrt(np.clip(voxel_mm**2 - spacing**2, 0, None)) / 2.355
    if np.any(sigmas > 0):
        smoother = sitk.SmoothingRecursiveGaussianImageFilter()
        smoother.SetSigma([float(max(s, 1e-3)) for s in sigmas])
        image = smoother.Execute(image)
    affine, shape = ras_grid(img, voxel_mm)
    ref = reference_image(affine, shape)
    return sitk.Resample(image, ref, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def foreground_mask(image, dilate_mm: float = 8.0):
    """Otsu foreground of a SimpleITK image, dilated: where a registration metric should look."""
    import SimpleITK as sitk

    mask = sitk.OtsuThreshold(image, 0, 1, 128)
    radius = [max(1, int(round(dilate_mm / s))) for s in image.GetSpacing()]
    return sitk.BinaryDilate(mask, radius)


def register_rigid(
    fixed: nib.spatialimages.SpatialImage,
    moving: nib.spatialimages.SpatialImage,
    *,
    voxel_mm: float = 2.0,
    shrink_factors: tuple[int, ...] = (4, 2, 1),
    smoothing_mm: tuple[float, ...] = (4.0, 2.0, 0.0),
    sampling_fraction: float = 0.15,
    max_iterations: int = 200,
    initial_transform=None,
    seed: int = 20240601,
) -> RegistrationResult:
    """Find the rigid transform that maps ``fixed`` world points onto ``moving``.

    Args:
        fixed: reference image (the T1w).
        moving: image to align (the FLAIR).
        voxel_mm: isotropic resolution of the finest level.
        shrink_factors: pyramid shrink factors relative to ``voxel_mm``.
        smoothing_mm: Gaussian sigma (mm) per level.
        sampling_fraction: fraction of fixed-mask voxels sampled per iteration.
        max_iterations: optimizer iteration cap per level.
        initial_transform: start point; defaults to the identity in world space
            (same-session scans share the scanner's coordinates).
        seed: sampling seed, so reruns give identical transforms.

    Returns:
        A :class:`RegistrationResult`.
    """
    import SimpleITK as sitk

    fixed_w = working_image(fixed, voxel_mm)
    moving_w = working_image(moving, voxel_mm)
    transform = sitk.Euler3DTransform()
    if initial_transform is not None:
        transform.SetMatrix(initial_transform.GetMatrix())
        transform.SetTranslation(initial_transform.GetTranslation())
    # rotate about the fixed image's centre so that rotations and shifts decouple
    size = np.array(fixed_w.GetSize())
    transform.SetCenter(fixed_w.TransformContinuousIndexToPhysicalPoint((size - 1) / 2.0))

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling_fraction, seed)
    method.SetMetricFixedMask(foreground_mask(fixed_w))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=max_iterations,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed_w, moving_w)
    result = RegistrationResult(
        transform=transform,
        final_metric=float(method.GetMetricValue()),
        iterations=int(method.GetOptimizerIteration()),
        stop_condition=method.GetOptimizerStopConditionDescription(),
    )
    LOGGER.info("rigid registration: metric %.4f after %d iterations (%s)", result.final_metric,
                result.iterations, result.stop_condition)
    return result


def displacement_mm(transform_a, transform_b, points_lps: np.ndarray) -> np.ndarray:
    """Distance (mm) between where two transforms send each point (rows of an N x 3 LPS array)."""
    a = np.array([transform_a.TransformPoint(tuple(map(float, p))) for p in points_lps])
    b = np.array([transform_b.TransformPoint(tuple(map(float, p))) for p in points_lps])
    return np.linalg.norm(a - b, axis=1)


def write_itk_affine(transform, path) -> None:
    """Save a linear ITK transform as ``AffineTransform_double_3_3`` text, the same mapping.

    SimpleITK writes a rigid result as ``Euler3DTransform``, which ANTs reads but
    nitransforms and several other readers do not; every one reads the affine form.
    """
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    sitk.WriteTransform(affine, str(path))
