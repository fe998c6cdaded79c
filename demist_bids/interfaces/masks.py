"""Interfaces for the brain mask and the three-class tissue segmentation."""

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


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected T1w on the 1 mm grid")
    native_file = File(exists=True, mandatory=True,
                       desc="validated native T1w, inspected for prior skull stripping")
    fov_mask = File(exists=True, desc="T1w field of view on the 1 mm grid (the mask stays inside)")
    in_mask = File(exists=True, desc="a brain mask from another pipeline (any grid)")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _BrainMaskOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="uint8 brain mask on in_file's grid")
    template = traits.Str(desc="template used, 'input mask' or 'skull-stripped input'")
    skull_stripped = traits.Bool(desc="whether the input was already skull-stripped")


class BrainMask(SimpleInterface):
    """A brain mask: the given one, else the support of skull-stripped input, else a template's."""

    input_spec = _BrainMaskInputSpec
    output_spec = _BrainMaskOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np

        from ..preprocessing import brain_mask as bm
        from ..preprocessing.grids import resample_like

        set_threads(self.inputs.num_threads)
        t1w = nib.load(self.inputs.in_file)
        native = nib.load(self.inputs.native_file)
        stripped = bm.is_skull_stripped(native)
        if isdefined(self.inputs.in_mask):
            given = nib.load(self.inputs.in_mask)
            binary = nib.Nifti1Image((np.asanyarray(given.dataobj) > 0).astype(np.uint8),
                                     given.affine)
            mask = resample_like(binary, t1w, order=0, dtype=np.uint8)
            source = "input mask"
        elif stripped:
            mask = bm.support_mask(resample_like(native, t1w, order=1))
            source = "skull-stripped input"
        else:
            result = bm.template_brain_mask(t1w, subject_has_skull=True)
            mask, source = result.mask, result.template
        data = np.asanyarray(mask.dataobj) > 0
        if isdefined(self.inputs.fov_mask):
            data &= np.asanyarray(nib.load(self.inputs.fov_mask).dataobj) > 0
        out = nib.Nifti1Image(data.astype(np.uint8), t1w.affine)
        out.set_data_dtype(np.uint8)
        self._results["out_mask"] = out_path(runtime.cwd, self.inputs.in_file, "_brainmask",
                                             ".nii.gz")
        nib.save(out, self._results["out_mask"])
        self._results["template"] = source
        self._results["skull_stripped"] = bool(stripped)
        return runtime


class _TissueSegmentationInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="bias-corrected T1w")
    brain_mask = File(exists=True, mandatory=True)
    seed = traits.Int(0, usedefault=True)
    label_order = traits.Str(desc="the labels written; part of the node's hash so that work "
                                  "directories cached with the old order (1 CSF, 2 GM, 3 WM) "
                                  "are recomputed")


class _TissueSegmentationOutputSpec(TraitedSpec):
    out_dseg = File(exists=True, desc="uint8 labels: 1 GM, 2 WM, 3 CSF")


class TissueSegmentation(SimpleInterface):
    """Three-class Gaussian-mixture segmentation of T1w intensity inside the brain."""

    input_spec = _TissueSegmentationInputSpec
    output_spec = _TissueSegmentationOutputSpec

    def __init__(self, **inputs):
        from ..preprocessing.tissues import LABEL_ORDER

        super().__init__(**inputs)
        self.inputs.label_order = LABEL_ORDER

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.tissues import segment_tissues

        dseg = segment_tissues(nib.load(self.inputs.in_file), nib.load(self.inputs.brain_mask),
                               seed=self.inputs.seed)
        self._results["out_dseg"] = out_path(runtime.cwd, self.inputs.in_file, "_dseg", ".nii.gz")
        nib.save(dseg, self._results["out_dseg"])
        return runtime
