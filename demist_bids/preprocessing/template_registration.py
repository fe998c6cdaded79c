"""Register a subject's T1w brain to an output-space template: affine, then a coarse B-spline warp.

The template is the fixed image and the subject the moving one, so the result
maps template points to T1w points (ITK's convention): with it, T1w-space
images are resampled onto the template grid. That is BIDS' ``mode-image``
transform ``from-T1w_to-<template>``; its inverse (T1w points to template
points) is ``from-<template>_to-T1w``.

1. Affine: the multi-start similarity-then-affine search the brain mask
   already uses (:func:`demist_bids.preprocessing.brain_mask.register_template`),
   here brain against brain at 4 then 2 mm.
2. Nonlinear: a cubic B-spline free-form deformation (control points about
   25 mm apart), Mattes mutual information inside the (dilated) template
   brain, images at 4 then 2 mm, L-BFGS-B. Coarse on purpose:
   it corrects brain shape and ventricle size in well under a minute on two
   CPUs; it does not match individual sulci.
3. The warp is stored as a displacement field on a 4 mm grid over the
   template (the B-spline is smooth on that scale; a 1 mm field would make
   each file ~200 MB) and inverted numerically there (``InvertDisplacementField``), so both
   directions are the same kind of ITK ``CompositeTransform`` (affine +
   displacement field) that ANTs writes and antsApplyTransforms and
   nitransforms read from HDF5.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from .grids import resample
from .sitk_bridge import to_sitk
from .templates import BrainTemplate, SpaceTemplate

LOGGER = logging.getLogger("demist.preprocessing")


@dataclass
class TemplateRegistrationResult:
    """Both directions of the registration and how it went."""

    forward: object
    """``SimpleITK.CompositeTransform``: template points -> T1w points (``from-T1w_to-<tpl>``)."""
    inverse: object
    """``SimpleITK.CompositeTransform``: T1w points -> template points (``from-<tpl>_to-T1w``)."""
    metrics: dict = field(default_factory=dict)
    """Final costs, Dice of the brain masks in template space, inversion error, seconds."""


def _brain(img: nib.spatialimages.SpatialImage, mask: nib.spatialimages.SpatialImage):
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    return nib.Nifti1Image(data * (np.asanyarray(mask.dataobj) > 0), img.affine)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary arrays (1 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / total) if total else 1.0


def affine_to_template(t1w_brain, template: SpaceTemplate, *, seed: int):
    """Affine transform, T1w points -> template points, and its final metric."""
    from .brain_mask import register_template

    as_brain = BrainTemplate(template.name, template.t1w, template.brain_mask, has_skull=False)
    return register_template(t1w_brain, as_brain, subject_has_skull=False, voxel_mm=2.0,
                             seed=seed)


def bspline_to_template(fixed, moving, moving_initial, fixed_mask, *, mesh_mm: float,
                        iterations: int, seed: int, sampling_fraction: float = 0.03):
    """B-spline transform in template space (fixed) on top of ``moving_initial``, and its metric."""
    import SimpleITK as sitk

    extent = np.array(fixed.GetSize()) * np.array(fixed.GetSpacing())
    mesh = [max(2, int(round(e / mesh_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling_fraction, seed)
    method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                                maximumNumberOfCorrections=5,
                                maximumNumberOfFunctionEvaluations=2 * iterations,
                                costFunctionConvergenceFactor=1e7)
    method.SetMovingInitialTransform(moving_initial)
    method.SetInitialTransform(bspline, inPlace=True)
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([4.0, 2.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.Execute(fixed, moving)
    return bspline, float(method.GetMetricValue())


def register_to_template(
    t1w: nib.spatialimages.SpatialImage,
    brain_mask: nib.spatialimages.SpatialImage,
    template: SpaceTemplate,
    *,
    voxel_mm: float = 2.0,
    mesh_mm: float = 25.0,
    iterations: int = 30,
    field_mm: float = 4.0,
    nonlinear: bool = True,
    seed: int = 20240601,
) -> TemplateRegistrationResult:
    """Register a T1w (any grid; bias-corrected) to ``template``, inside its brain mask.

    Args:
        t1w: the subject's T1w; only its brain (``brain_mask``) is used.
        brain_mask: the subject's brain mask on ``t1w``'s grid.
        template: the output-space template (brain-only T1w and mask).
        voxel_mm: finest working resolution.
        mesh_mm: B-spline control-point spacing at the finest level.
        iterations: L-BFGS-B iterations per level.
        field_mm: spacing of the stored displacement fields.
        nonlinear: False stops after the affine (a fallback and for tests).
        seed: metric sampling seed (reruns give identical transforms).
    """
    import SimpleITK as sitk

    from .registration import working_image

    started = time.monotonic()
    brain = _brain(t1w, brain_mask)
    to_template, affine_metric = affine_to_template(brain, template, seed=seed)
    to_t1w = to_template.GetInverse()
    metrics = {"AffineCost": affine_metric}
    fixed = working_image(template.t1w, voxel_mm)
    moving = working_image(brain, voxel_mm)
    field_grid = working_image(template.brain_mask, field_mm)
    grid = dict(size=field_grid.GetSize(), outputOrigin=field_grid.GetOrigin(),
                outputSpacing=field_grid.GetSpacing(), outputDirection=field_grid.GetDirection())
    if nonlinear:
        mask = sitk.Resample(to_sitk(template.brain_mask, dtype=np.uint8), fixed,
                             sitk.Transform(3, sitk.sitkIdentity), sitk.sitkNearestNeighbor, 0,
                             sitk.sitkUInt8)
        mask = sitk.BinaryDilate(mask, [max(1, int(round(6.0 / voxel_mm)))] * 3)
        bspline, metrics["NonlinearCost"] = bspline_to_template(
            fixed, moving, to_t1w, mask, mesh_mm=mesh_mm, iterations=iterations, seed=seed)
        warp = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, **grid)
    else:
        warp = sitk.Image(list(field_grid.GetSize()), sitk.sitkVectorFloat64, 3)
        warp.CopyInformation(field_grid)
    unwarp = sitk.InvertDisplacementField(warp, maximumNumberOfIterations=30,
                                          maxErrorToleranceThreshold=0.05,
                                          meanErrorToleranceThreshold=0.001,
                                          enforceBoundaryCondition=True)
    # A composite applies its last transform first: template -> (warp) -> (affine) -> T1w
    forward = sitk.CompositeTransform([to_t1w, sitk.DisplacementFieldTransform(warp)])
    inverse = sitk.CompositeTransform([sitk.DisplacementFieldTransform(unwarp), to_template])
    metrics["InverseErrorMm"] = round(_round_trip_error(forward, inverse, template), 3)
    metrics["RuntimeSeconds"] = round(time.monotonic() - started, 1)
    LOGGER.info("registration to %s: %s", template.name, metrics)
    return TemplateRegistrationResult(forward, inverse, metrics)


def _round_trip_error(forward, inverse, template: SpaceTemplate, n: int = 500) -> float:
    """Median distance (mm) by which template brain points miss themselves after both transforms."""
    from .sitk_bridge import RAS_TO_LPS

    ijk = np.argwhere(np.asanyarray(template.brain_mask.dataobj) > 0)
    ijk = ijk[:: max(1, len(ijk) // n)]
    lps = (RAS_TO_LPS @ template.brain_mask.affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    back = np.array([inverse.TransformPoint(forward.TransformPoint(tuple(map(float, p))))
                     for p in lps])
    return float(np.median(np.linalg.norm(back - lps, axis=1)))


def to_template(img: nib.spatialimages.SpatialImage, template: SpaceTemplate, forward, *,
                order: int = 1, dtype=np.float32) -> nib.Nifti1Image:
    """Resample a T1w-space image (any grid in the T1w's world) onto the template grid."""
    return resample(img, template.brain_mask.affine, template.brain_mask.shape[:3], order=order,
                    transform=forward, dtype=dtype)


def write_transform(transform, path) -> None:
    """Write an ITK transform; ``.h5`` gives the HDF5 composite file ANTs and nitransforms read."""
    import SimpleITK as sitk

    sitk.WriteTransform(transform, str(path))
