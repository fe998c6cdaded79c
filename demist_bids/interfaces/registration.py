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


class _TemplateRegistrationInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="bias-corrected T1w (any grid in its world)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the t1w's grid")
    template = traits.Str(mandatory=True, desc="TemplateFlow name of the output space")
    resolution = traits.Str("1", usedefault=True, desc="template grid registered to (res- label)")
    resolutions = traits.List(traits.Str, desc="every res- label the outputs use (sidecars)")
    nonlinear = traits.Bool(True, usedefault=True, desc="False: affine only")
    seed = traits.Int(20240601, usedefault=True, desc="metric sampling seed")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _TemplateRegistrationOutputSpec(TraitedSpec):
    forward_xfm = File(exists=True, desc="HDF5 composite, template points -> T1w points")
    inverse_xfm = File(exists=True, desc="HDF5 composite, T1w points -> template points")
    out_json = File(exists=True, desc="registration record: template, source, grids, costs")
    template_t1w = File(exists=True, desc="the template brain on its grid (reportlet)")
    template_mask = File(exists=True, desc="the template brain mask on its grid (reportlet)")
    t1w_template = File(exists=True, desc="the T1w brain resampled onto the template grid")


class TemplateRegistration(SimpleInterface):
    """Affine + B-spline registration of the T1w brain to an output-space template."""

    input_spec = _TemplateRegistrationInputSpec
    output_spec = _TemplateRegistrationOutputSpec

    def _run_interface(self, runtime):
        import json
        import os

        import nibabel as nib
        import numpy as np

        from ..preprocessing.template_registration import (
            dice, register_to_template, to_template, write_transform)
        from ..preprocessing.templates import load_space_template

        set_threads(self.inputs.num_threads)
        name, res = self.inputs.template, self.inputs.resolution
        template = load_space_template(name, res)
        t1w, mask = nib.load(self.inputs.t1w), nib.load(self.inputs.brain_mask)
        result = register_to_template(t1w, mask, template, nonlinear=self.inputs.nonlinear,
                                      seed=self.inputs.seed)
        paths = {key: os.path.join(runtime.cwd, f"{key}.{ext}") for key, ext in (
            ("forward_xfm", "h5"), ("inverse_xfm", "h5"), ("out_json", "json"),
            ("template_t1w", "nii"), ("template_mask", "nii"), ("t1w_template", "nii"))}
        write_transform(result.forward, paths["forward_xfm"])
        write_transform(result.inverse, paths["inverse_xfm"])
        brain = nib.Nifti1Image(np.asanyarray(t1w.dataobj, dtype=np.float32)
                                * (np.asanyarray(mask.dataobj) > 0), t1w.affine)
        nib.save(to_template(brain, template, result.forward), paths["t1w_template"])
        warped_mask = to_template(mask, template, result.forward, order=0, dtype=np.uint8)
        nib.save(template.t1w, paths["template_t1w"])
        nib.save(template.brain_mask, paths["template_mask"])
        resolutions = {}
        for label in self.inputs.resolutions or [res]:
            zooms = (template if label == res else load_space_template(name, label)).t1w.header
            size = "x".join(f"{z:g}" for z in zooms.get_zooms()[:3])
            resolutions[label] = f"{name} grid res-{label} ({size} mm voxels)"
        record = {
            "Template": name,
            "TemplateSource": template.source,
            "RegisteredOnGrid": f"res-{res}",
            "Method": "affine then B-spline (SimpleITK, Mattes MI)" if self.inputs.nonlinear
            else "affine (SimpleITK, Mattes MI)",
            **result.metrics,
            "BrainMaskDice": round(dice(warped_mask.dataobj, template.brain_mask.dataobj), 4),
            "Resolutions": resolutions,
        }
        with open(paths["out_json"], "w") as stream:
            json.dump(record, stream, indent=2)
        self._results.update(paths)
        return runtime


class _ApplyTemplateTransformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image in the T1w's world (any grid)")
    transform = File(exists=True, mandatory=True, desc="forward composite (template -> T1w points)")
    template = traits.Str(mandatory=True, desc="TemplateFlow name of the output space")
    resolution = traits.Str("1", usedefault=True, desc="res- label of the target grid")
    interpolation = traits.Enum("linear", "nearest", usedefault=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _ApplyTemplateTransformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image on the template grid")


class ApplyTemplateTransform(SimpleInterface):
    """Resample a T1w-space image onto a template grid through the registration."""

    input_spec = _ApplyTemplateTransformInputSpec
    output_spec = _ApplyTemplateTransformOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np
        import SimpleITK as sitk

        from ..preprocessing.grids import resample
        from ..preprocessing.templates import space_template_grid

        set_threads(self.inputs.num_threads)
        affine, shape = space_template_grid(self.inputs.template, self.inputs.resolution)
        nearest = self.inputs.interpolation == "nearest"
        out = resample(nib.load(self.inputs.in_file), affine, shape,
                       transform=sitk.ReadTransform(self.inputs.transform),
                       order=0 if nearest else 1, dtype=np.uint8 if nearest else np.float32)
        suffix = f"_space-{self.inputs.template}_res-{self.inputs.resolution}"
        self._results["out_file"] = out_path(runtime.cwd, self.inputs.in_file, suffix)
        nib.save(out, self._results["out_file"])
        return runtime
