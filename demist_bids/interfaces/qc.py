"""Interface that gathers one subject's preprocessing quality measures into a JSON file."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)


class _AnatomicalQCInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="bias-corrected T1w on the 1 mm grid (unscaled)")
    flair = File(exists=True, mandatory=True, desc="bias-corrected FLAIR on the 1 mm grid")
    flair_fov = File(exists=True, mandatory=True, desc="FLAIR field of view on the 1 mm grid")
    flair_source = traits.Str(mandatory=True, desc="the raw FLAIR file, named in errors")
    brain_mask = File(exists=True, mandatory=True)
    dseg = File(exists=True, mandatory=True)
    registration_cost = traits.Float(mandatory=True)
    template = traits.Str(mandatory=True)
    skull_stripped = traits.Bool(mandatory=True)
    t1w_fixes = traits.List(traits.Str)
    flair_fixes = traits.List(traits.Str)
    min_flair_coverage = traits.Float(0.5, usedefault=True,
                                      desc="smallest acceptable brain fraction inside the FLAIR")


class _AnatomicalQCOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="JSON with the measures")
    flair_coverage = traits.Float()


class AnatomicalQC(SimpleInterface):
    """Write registration cost, mask volume, SNRs, template, fixes and FLAIR coverage to JSON.

    Raises :class:`~demist_bids.exceptions.BadDataError` naming the FLAIR when it
    covers less than ``min_flair_coverage`` of the brain.
    """

    input_spec = _AnatomicalQCInputSpec
    output_spec = _AnatomicalQCOutputSpec

    def _run_interface(self, runtime):
        import json
        import os

        import nibabel as nib

        from ..exceptions import BadDataError
        from ..preprocessing import qc

        mask = nib.load(self.inputs.brain_mask)
        dseg = nib.load(self.inputs.dseg)
        coverage = qc.coverage(nib.load(self.inputs.flair_fov), mask)
        measures = {
            "registration_cost": self.inputs.registration_cost,
            "brain_mask_volume_ml": round(qc.mask_volume_ml(mask), 2),
            "snr_t1w": round(qc.tissue_snr(nib.load(self.inputs.t1w), dseg), 3),
            "snr_flair": round(qc.tissue_snr(nib.load(self.inputs.flair), dseg), 3),
            "template": self.inputs.template,
            "skull_stripped_input": bool(self.inputs.skull_stripped),
            "fixes": [f"T1w: {f}" for f in self.inputs.t1w_fixes]
            + [f"FLAIR: {f}" for f in self.inputs.flair_fixes],
            "flair_coverage": round(coverage, 4),
        }
        self._results["out_file"] = os.path.join(runtime.cwd, "anat_qc.json")
        with open(self._results["out_file"], "w") as stream:
            json.dump(measures, stream, indent=2, allow_nan=True)
        self._results["flair_coverage"] = coverage
        if coverage < self.inputs.min_flair_coverage:
            raise BadDataError(
                f"{self.inputs.flair_source}: the FLAIR covers only {coverage:.0%} of the brain "
                f"(at least {self.inputs.min_flair_coverage:.0%} needed)"
            )
        return runtime
