"""Interfaces for N4 bias-field correction and rigid FLAIR -> T1w registration (SimpleITK)."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ._helpers import out_path, set_threads


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    shrink_mm = traits.Float(8.0, usedefault=True,
                             desc="voxel size (mm) at which the field is fitted")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected image")
    bias_field = File(exists=True, desc="estimated multiplicative field")


class N4BiasCorrection(SimpleInterface):
    """N4 intensity non-uniformity correction on a shrunk copy, applied at full resolution."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.bias import n4_correct

        set_threads(self.inputs.num_threads)
        corrected, field = n4_correct(nib.load(self.inputs.in_file),
                                      shrink_mm=self.inputs.shrink_mm)
        self._results["out_file"] = out_path(runtime.cwd, self.inputs.in_file, "_n4")
        self._results["bias_field"] = out_path(runtime.cwd, self.inputs.in_file, "_biasfield")
        nib.save(corrected, self._results["out_file"])
        nib.save(field, self._results["bias_field"])
        return runtime


class _RigidRegistrationInputSpec(BaseInterfaceInputSpec):
    fixed_image = File(exists=True, mandatory=True, desc="reference (T1w)")
    moving_image = File(exists=True, mandatory=True, desc="image to align (FLAIR)")
    voxel_mm = traits.Float(2.0, usedefault=True, desc="finest pyramid level (mm)")
    seed = traits.Int(20240601, usedefault=True, desc="metric sampling seed")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _RigidRegistrationOutputSpec(TraitedSpec):
    out_transform = File(exists=True, desc="ITK rigid transform (fixed points -> moving points)")
    final_metric = traits.Float(desc="final Mattes mutual information (lower is better)")
    iterations = traits.Int(desc="optimizer iterations at the last level")


class RigidRegistration(SimpleInterface):
    """Rigid registration with Mattes mutual information over a 3-level pyramid."""

    input_spec = _RigidRegistrationInputSpec
    output_spec = _RigidRegistrationOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import SimpleITK as sitk

        from ..preprocessing.registration import register_rigid

        set_threads(self.inputs.num_threads)
        result = register_rigid(
            nib.load(self.inputs.fixed_image), nib.load(self.inputs.moving_image),
            voxel_mm=self.inputs.voxel_mm, seed=self.inputs.seed,
        )
        self._results["out_transform"] = out_path(runtime.cwd, self.inputs.moving_image,
                                                  "_to_fixed_rigid", ".tfm")
        sitk.WriteTransform(result.transform, self._results["out_transform"])
        self._results["final_metric"] = result.final_metric
        self._results["iterations"] = result.iterations
        return runtime


class _ExportTransformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="linear ITK transform (any ITK text form)")


class _ExportTransformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the same transform as AffineTransform_double_3_3 text")


class ExportTransform(SimpleInterface):
    """Rewrite a linear transform in the ITK text form every reader accepts (ANTs, nitransforms)."""

    input_spec = _ExportTransformInputSpec
    output_spec = _ExportTransformOutputSpec

    def _run_interface(self, runtime):
        import SimpleITK as sitk

        from ..preprocessing.registration import write_itk_affine

        self._results["out_file"] = out_path(runtime.cwd, self.inputs.in_file, "_affine", ".txt")
        write_itk_affine(sitk.ReadTransform(self.inputs.in_file), self._results["out_file"])
        return runtime
