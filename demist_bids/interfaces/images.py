"""Interfaces that validate, resample and rescale anatomical images.

Each delegates to :mod:`demist_bids.preprocessing` and writes into the node's
working directory.
"""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from ._helpers import out_path, set_threads


class _ValidateAnatomicalInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="raw anatomical image")


class _ValidateAnatomicalOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="3D float32 image, consistent header, no NaN/negatives")
    fixes = traits.List(traits.Str, desc="human-readable fixes and notes")


class ValidateAnatomical(SimpleInterface):
    """Fix the header, squeeze one-volume 4D, zero NaNs and negatives; refuse unusable images.

    Raises :class:`~demist_bids.exceptions.BadDataError` naming the file for 2D
    images, several volumes, all-zero or constant images.
    """

    input_spec = _ValidateAnatomicalInputSpec
    output_spec = _ValidateAnatomicalOutputSpec

    def _run_interface(self, runtime):
        import sys

        import nibabel as nib

        from ..preprocessing.validation import load_validated

        # the command line refused images over the configured --max-image-voxels before
        # building the workflow; here only the header and byte stream are checked again
        img, fixes = load_validated(self.inputs.in_file, max_voxels=sys.maxsize)
        self._results["out_file"] = out_path(runtime.cwd, self.inputs.in_file, "_valid")
        nib.save(img, self._results["out_file"])
        self._results["fixes"] = fixes
        return runtime


class _ResampleToGridInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    reference = File(exists=True,
                     desc="image whose grid to use; absent: a RAS grid covering in_file")
    voxel_mm = traits.Float(1.0, usedefault=True, desc="voxel size of a grid built from in_file")
    transform = File(exists=True, desc="ITK transform, reference points -> in_file points")
    interpolation = traits.Enum("linear", "nearest", "bspline", usedefault=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _ResampleToGridOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="resampled image (float32; uint8 for nearest)")
    fov_mask = File(exists=True, desc="uint8: where in_file's field of view covers the grid")


class ResampleToGrid(SimpleInterface):
    """Resample onto the model's 1 mm RAS grid (built from ``in_file`` or from ``reference``)."""

    input_spec = _ResampleToGridInputSpec
    output_spec = _ResampleToGridOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np
        import SimpleITK as sitk

        from ..preprocessing.grids import ras_grid, resample

        set_threads(self.inputs.num_threads)
        img = nib.load(self.inputs.in_file)
        if isdefined(self.inputs.reference):
            ref = nib.load(self.inputs.reference)
            affine, shape = ref.affine, ref.shape[:3]
        else:
            affine, shape = ras_grid(img, self.inputs.voxel_mm)
        xfm = None
        if isdefined(self.inputs.transform):
            xfm = sitk.ReadTransform(self.inputs.transform)
        order = {"nearest": 0, "linear": 1, "bspline": 3}[self.inputs.interpolation]
        dtype = np.uint8 if order == 0 else np.float32
        out = resample(img, affine, shape, order=order, transform=xfm, dtype=dtype)
        if order == 3:  # B-spline overshoots: keep intensities non-negative
            out = nib.Nifti1Image(np.clip(out.get_fdata(dtype=np.float32), 0, None), out.affine)
        ones = nib.Nifti1Image(np.ones(img.shape[:3], np.uint8), img.affine)
        fov = resample(ones, affine, shape, order=0, transform=xfm, dtype=np.uint8)
        self._results["out_file"] = out_path(runtime.cwd, self.inputs.in_file, "_grid")
        self._results["fov_mask"] = out_path(runtime.cwd, self.inputs.in_file, "_fov", ".nii.gz")
        nib.save(out, self._results["out_file"])
        nib.save(fov, self._results["fov_mask"])
        return runtime


class _ResampleToNativeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image on the 1 mm grid")
    reference = File(exists=True, mandatory=True, desc="validated native T1w")
    interpolation = traits.Enum("nearest", "linear", "bspline", usedefault=True)


class _ResampleToNativeOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class ResampleToNative(SimpleInterface):
    """Bring an image from the 1 mm grid back to the native T1w grid (identity in world space)."""

    input_spec = _ResampleToNativeInputSpec
    output_spec = _ResampleToNativeOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.grids import resample_to_native

        order = {"nearest": 0, "linear": 1, "bspline": 3}[self.inputs.interpolation]
        out = resample_to_native(nib.load(self.inputs.in_file), nib.load(self.inputs.reference),
                                 order=order)
        self._results["out_file"] = out_path(runtime.cwd, self.inputs.in_file, "_native", ".nii.gz")
        nib.save(out, self._results["out_file"])
        return runtime


class _PercentileScaleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    lower = traits.Float(0.0, usedefault=True, desc="percentile mapped to 0")
    upper = traits.Float(99.5, usedefault=True, desc="percentile mapped to 1")
    mask_output = traits.Bool(True, usedefault=True, desc="zero outside the brain")


class _PercentileScaleOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 in [0, 1]")
    low = traits.Float(desc="intensity mapped to 0")
    high = traits.Float(desc="intensity mapped to 1")


class PercentileScale(SimpleInterface):
    """Scale to [0, 1] with the brain's lower/upper percentiles (DEMIST's input convention)."""

    input_spec = _PercentileScaleInputSpec
    output_spec = _PercentileScaleOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.intensity import percentile_scale

        out, (low, high) = percentile_scale(
            nib.load(self.inputs.in_file), nib.load(self.inputs.brain_mask),
            lower=self.inputs.lower, upper=self.inputs.upper, mask_output=self.inputs.mask_output,
        )
        self._results.update(out_file=out_path(runtime.cwd, self.inputs.in_file, "_scaled"),
                             low=low, high=high)
        nib.save(out, self._results["out_file"])
        return runtime


__all__ = ["PercentileScale", "ResampleToGrid", "ResampleToNative", "ValidateAnatomical"]
