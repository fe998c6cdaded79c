"""The Nipype interface that puts a subject's results into the derivatives dataset.

``CommitDerivatives`` writes a subject's images, sidecars and reportlets in one
all-or-nothing step (see :mod:`demist_bids.derivatives.writer`).
"""

from __future__ import annotations

from demist_bids.bids import scan_prefix

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _CommitDerivativesInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Directory(mandatory=True, desc="derivatives dataset root")
    subject = traits.Str(mandatory=True)
    session = traits.Str("", usedefault=True)
    psr = File(exists=True, mandatory=True, desc="synthesized PSR, native grid")
    psr_std = File(desc="uncertainty, native grid")
    psr_model = File(desc="synthesized PSR on the 1 mm model grid (--output-spaces model)")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask, native grid")
    dseg = File(exists=True, desc="tissue labels, native grid")
    t1w_preproc = File(exists=True, desc="bias-corrected T1w, native grid")
    flair_preproc = File(exists=True, desc="bias-corrected FLAIR on the native T1w grid")
    flair_to_t1w_xfm = File(exists=True, desc="ITK text transform, FLAIR -> T1w (mode image)")
    qc = File(exists=True, desc="preprocessing QC JSON")
    synthesis_info = File(exists=True, mandatory=True, desc="sampler JSON")
    lesion_values = File(exists=True, desc="lesion-vs-NAWM summary JSON")
    metadata = traits.Dict(desc="static sidecar fields (model, sources, software)")
    space_files = InputMultiObject(File(exists=True), desc="template-space outputs")
    space_keys = traits.List(traits.Str, desc="their output keys (outputs.in_space), in order")
    registrations = InputMultiObject(File(exists=True), desc="template registration records")
    reportlets = InputMultiObject(File(exists=True), desc="SVG reportlets")
    reportlet_names = traits.List(traits.Str, desc="one key per reportlet")


class _CommitDerivativesOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True))


class CommitDerivatives(SimpleInterface):
    """Write one subject's outputs, all sidecars filled, in a single step."""

    input_spec = _CommitDerivativesInputSpec
    output_spec = _CommitDerivativesOutputSpec

    def _run_interface(self, runtime):
        from demist_bids.derivatives.outputs import OUTPUTS
        from demist_bids.derivatives.sidecars import build_items
        from demist_bids.derivatives.writer import commit_outputs, copy_reportlets

        def opt(name):
            value = getattr(self.inputs, name)
            return Path(value) if isdefined(value) and value else None

        qc = json.loads(Path(self.inputs.qc).read_text()) if opt("qc") else {}
        info = json.loads(Path(self.inputs.synthesis_info).read_text())
        lesion = json.loads(opt("lesion_values").read_text()) if opt("lesion_values") else {}
        session = self.inputs.session or None
        spaces = dict(zip(self.inputs.space_keys, self.inputs.space_files)) if isdefined(
            self.inputs.space_files) else {}
        registrations = [json.loads(Path(f).read_text()) for f in self.inputs.registrations] \
            if isdefined(self.inputs.registrations) else []
        items = build_items(
            {key: opt(key) for key in OUTPUTS}, qc=qc, synthesis=info,
            static=dict(self.inputs.metadata or {}), lesion_values=lesion,
            spaces={k: Path(v) for k, v in spaces.items()},
            registrations={r["Template"]: r for r in registrations},
        )
        bids_name = scan_prefix(self.inputs.subject, session)
        if isdefined(self.inputs.reportlets):
            copy_reportlets(
                Path(self.inputs.output_dir), self.inputs.subject,
                dict(zip(self.inputs.reportlet_names, self.inputs.reportlets)), bids_name,
            )
        written = commit_outputs(Path(self.inputs.output_dir), self.inputs.subject, session, items)
        self._results["out_files"] = [str(p) for p in written]
        return runtime
