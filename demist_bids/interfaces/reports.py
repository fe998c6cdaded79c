"""Reportlets of the synthesis: PSR and uncertainty mosaics, lesion-vs-NAWM values.

Each interface writes one small SVG (or HTML fragment) into its working
directory; :mod:`demist_bids.reports.subject` assembles them into ``sub-X.html``.
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _MosaicInputSpec(BaseInterfaceInputSpec):
    background = File(exists=True, mandatory=True, desc="T1w (1 mm grid)")
    overlay = File(exists=True, mandatory=True, desc="map to show")
    brain_mask = File(exists=True, mandatory=True)
    title = traits.Str("PSR", usedefault=True)
    vmax = traits.Float(0.0, usedefault=True, desc="colour scale maximum (0: 99th percentile)")
    cmap = traits.Str("magma", usedefault=True)


class _MosaicOutputSpec(TraitedSpec):
    out_report = File(exists=True)


class MapMosaic(SimpleInterface):
    """Axial/coronal/sagittal mosaic of a map in the brain, as an SVG reportlet."""

    input_spec = _MosaicInputSpec
    output_spec = _MosaicOutputSpec

    def _run_interface(self, runtime):
        from demist_bids.reports.figures import map_mosaic_svg

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
