"""The reportlet interfaces: every figure of the subject report, and the lesion values.

Thin Nipype wrappers over :mod:`demist_bids.reports.mosaic` (the one mosaic
drawer): the preprocessing's brain-mask outline, FLAIR-to-T1w and template
registration flickers, and the synthesis's PSR and uncertainty mosaics; and
over :mod:`demist_bids.reports.lesions` (PSR in lesions against NAWM, as JSON
data). Each writes one file into its working directory;
:mod:`demist_bids.reports.subject` assembles the page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _ReportletOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="SVG reportlet")


class _Reportlet(SimpleInterface):
    """Loads its image inputs (``_images``, in order) and draws them with
    ``demist_bids.reports.mosaic.<_draw>`` into ``_out_name`` in its working directory."""

    output_spec = _ReportletOutputSpec
    _images: tuple[str, ...] = ()
    _draw = ""
    _out_name = ""

    def _run_interface(self, runtime):
        import nibabel as nib

        from demist_bids.reports import mosaic

        images = [nib.load(getattr(self.inputs, name)) for name in self._images]
        out = os.path.join(runtime.cwd, self._out_name)
        self._results["out_report"] = getattr(mosaic, self._draw)(*images, out)
        return runtime


class _MaskReportletInputSpec(BaseInterfaceInputSpec):
    background = File(exists=True, mandatory=True, desc="T1w on the 1 mm grid")
    mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")


class MaskReportlet(_Reportlet):
    """Brain-mask outline over the T1w."""

    input_spec = _MaskReportletInputSpec
    _images, _draw, _out_name = ("background", "mask"), "mask_reportlet", "brainmask.svg"


class _RegistrationReportletInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="T1w on the 1 mm grid")
    flair = File(exists=True, mandatory=True, desc="registered FLAIR on the same grid")
    dseg = File(exists=True, mandatory=True, desc="tissue labels (2 = WM) on the same grid")


class RegistrationReportlet(_Reportlet):
    """Flicker between T1w and registered FLAIR under the T1w white-matter outline."""

    input_spec = _RegistrationReportletInputSpec
    _images, _draw = ("t1w", "flair", "dseg"), "registration_reportlet"
    _out_name = "flair_to_t1w.svg"


class _TemplateReportletInputSpec(BaseInterfaceInputSpec):
    template = File(exists=True, mandatory=True, desc="template brain on its grid")
    subject = File(exists=True, mandatory=True, desc="T1w brain resampled onto that grid")
    template_mask = File(exists=True, mandatory=True, desc="template brain mask on that grid")


class TemplateReportlet(_Reportlet):
    """Flicker between a template and the T1w registered to it, under the template's brain outline."""

    input_spec = _TemplateReportletInputSpec
    _images, _draw = ("template", "subject", "template_mask"), "template_reportlet"
    _out_name = "t1w_to_template.svg"


class _MosaicInputSpec(BaseInterfaceInputSpec):
    background = File(exists=True, mandatory=True, desc="T1w (1 mm grid)")
    overlay = File(exists=True, mandatory=True, desc="map to show")
    brain_mask = File(exists=True, mandatory=True)
    title = traits.Str("PSR", usedefault=True)
    vmax = traits.Float(0.0, usedefault=True, desc="colour scale maximum (0: 99th percentile)")
    cmap = traits.Str("magma", usedefault=True)


class MapMosaic(SimpleInterface):
    """Axial/coronal/sagittal mosaic of a map in the brain, as an SVG reportlet."""

    input_spec = _MosaicInputSpec
    output_spec = _ReportletOutputSpec

    def _run_interface(self, runtime):
        from demist_bids.reports.mosaic import map_mosaic_svg

        out = Path(runtime.cwd) / "mosaic.svg"
        map_mosaic_svg(
            Path(self.inputs.background), Path(self.inputs.overlay), Path(self.inputs.brain_mask),
            out, title=self.inputs.title, vmax=self.inputs.vmax or None, cmap=self.inputs.cmap,
        )
        self._results["out_report"] = str(out)
        return runtime


class _LesionValuesInputSpec(BaseInterfaceInputSpec):
    psr = File(exists=True, mandatory=True, desc="synthesized PSR, native grid")
    dseg = File(exists=True, mandatory=True, desc="tissue labels, native grid")
    lesion_mask = File(desc="lesion mask on the native T1w grid")


class _LesionValuesOutputSpec(TraitedSpec):
    out_json = File(exists=True)


class LesionValues(SimpleInterface):
    """PSR in lesions vs normal-appearing white matter (proximal, distal, combined) with AUCs."""

    input_spec = _LesionValuesInputSpec
    output_spec = _LesionValuesOutputSpec

    def _run_interface(self, runtime):
        from demist_bids.reports.lesions import lesion_summary

        lesion = self.inputs.lesion_mask if isdefined(self.inputs.lesion_mask) else None
        summary = lesion_summary(Path(self.inputs.psr), Path(self.inputs.dseg),
                                 Path(lesion) if lesion else None)
        out = Path(runtime.cwd) / "lesion_values.json"
        out.write_text(json.dumps(summary, indent=2))
        self._results["out_json"] = str(out)
        return runtime
