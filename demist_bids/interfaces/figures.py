"""Reportlet interfaces for the anatomical preprocessing (SVG figures for the subject report)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
)


class _MaskReportletInputSpec(BaseInterfaceInputSpec):
    background = File(exists=True, mandatory=True, desc="T1w on the 1 mm grid")
    mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")


class _ReportletOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="SVG reportlet")


class MaskReportlet(SimpleInterface):
    """Brain-mask outline over the T1w."""

    input_spec = _MaskReportletInputSpec
    output_spec = _ReportletOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.figures import mask_reportlet

        out = os.path.join(runtime.cwd, "brainmask.svg")
        self._results["out_report"] = mask_reportlet(
            nib.load(self.inputs.background), nib.load(self.inputs.mask), out)
        return runtime


class _RegistrationReportletInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="T1w on the 1 mm grid")
    flair = File(exists=True, mandatory=True, desc="registered FLAIR on the same grid")
    dseg = File(exists=True, mandatory=True, desc="tissue labels (3 = WM) on the same grid")


class RegistrationReportlet(SimpleInterface):
    """Flicker between T1w and registered FLAIR under the T1w white-matter outline."""

    input_spec = _RegistrationReportletInputSpec
    output_spec = _ReportletOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.figures import registration_reportlet

        out = os.path.join(runtime.cwd, "flair_to_t1w.svg")
        self._results["out_report"] = registration_reportlet(
            nib.load(self.inputs.t1w), nib.load(self.inputs.flair), nib.load(self.inputs.dseg), out)
        return runtime


class _TemplateReportletInputSpec(BaseInterfaceInputSpec):
    template = File(exists=True, mandatory=True, desc="template brain on its grid")
    subject = File(exists=True, mandatory=True, desc="T1w brain resampled onto that grid")
    template_mask = File(exists=True, mandatory=True, desc="template brain mask on that grid")


class TemplateReportlet(SimpleInterface):
    """Flicker between a template and the T1w registered to it, under the template's brain outline."""

    input_spec = _TemplateReportletInputSpec
    output_spec = _ReportletOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib

        from ..preprocessing.figures import template_reportlet

        out = os.path.join(runtime.cwd, "t1w_to_template.svg")
        self._results["out_report"] = template_reportlet(
            nib.load(self.inputs.template), nib.load(self.inputs.subject),
            nib.load(self.inputs.template_mask), out)
        return runtime
