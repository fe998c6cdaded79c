"""The synthesis node: preprocessed T1w+FLAIR in, PSR map (and uncertainty) out.

torch and the model are imported only inside ``_run_interface`` so that building
the workflow (and ``demist --help``) never loads them. The node declares
``use_gpu`` so Nipype's MultiProc runs at most as many of them at once as there
are GPUs (``n_gpu_procs``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

LOGGER = logging.getLogger("nipype.interface")


class _SynthesizeInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="preprocessed T1w, 1 mm RAS, [0,1]")
    flair = File(exists=True, mandatory=True, desc="preprocessed FLAIR on the same grid")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    model_dir = traits.Directory(exists=True, mandatory=True, desc="demist model directory")
    model_config = traits.Dict(
        desc="model_dir's config.json as parsed and checked by the command line; then model_dir, "
             "sampler and steps are the resolved choice (a student's directory with ddim) and "
             "nothing is read or resolved again")
    student = traits.Bool(False, usedefault=True, desc="with model_config: model_dir is a student")
    sampler = traits.Str("auto", usedefault=True, desc="auto, ddpm, ddim, dpm++ or distilled")
    steps = traits.Int(0, usedefault=True, desc="sampling steps (0: the model's default)")
    samples = traits.Int(1, usedefault=True, desc="samples to draw")
    seed = traits.Int(42, usedefault=True, desc="random seed")
    device = traits.Str("cpu", usedefault=True, desc="torch device")
    use_gpu = traits.Bool(False, usedefault=True, desc="tells Nipype this node holds a GPU")
    num_threads = traits.Int(1, usedefault=True, desc="CPU threads for torch")


class _SynthesizeOutputSpec(TraitedSpec):
    psr = File(exists=True, desc="synthesized PSR (mean over samples), PSR units, 1 mm grid")
    psr_std = File(desc="per-voxel standard deviation across samples (samples > 1)")
    info = File(exists=True, desc="JSON: sampler, steps, samples, seed, device, seconds")


class Synthesize(SimpleInterface):
    """Run the DEMIST sampler on one subject's preprocessed images."""

    input_spec = _SynthesizeInputSpec
    output_spec = _SynthesizeOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        import numpy as np
        import torch

        from demist_bids.inference.sampler import synthesize
        from demist_bids.inference.student import SamplingChoice, resolve_sampling
        from demist_bids.models.config import ModelConfig
        from demist_bids.models.io import load_model

        torch.set_num_threads(max(1, self.inputs.num_threads))
        t1w = nb.load(self.inputs.t1w)
        flair = nb.load(self.inputs.flair)
        mask = np.asanyarray(nb.load(self.inputs.brain_mask).dataobj) > 0
        cond = np.stack(
            [np.asanyarray(t1w.dataobj, dtype=np.float32), np.asanyarray(flair.dataobj, dtype=np.float32)]
        )
        cond *= mask[None]  # the model was trained on skull-stripped inputs
        if isdefined(self.inputs.model_config):  # resolved and checked once, by the command line
            choice = SamplingChoice(Path(self.inputs.model_dir), self.inputs.sampler, self.inputs.steps,
                                    student=self.inputs.student)
            model = load_model(choice.model_dir, device=self.inputs.device,
                               config=ModelConfig.from_dict(self.inputs.model_config))
        else:  # read, checked and resolved here
            choice = resolve_sampling(Path(self.inputs.model_dir), self.inputs.sampler,
                                      self.inputs.steps)
            model = load_model(choice.model_dir, device=self.inputs.device)
        sampler, steps = choice.sampler, choice.steps

        started = time.monotonic()
        last = [0.0]

        def progress(step: int, total: int) -> None:
            now = time.monotonic()
            if step == total or now - last[0] > 5:
                LOGGER.info("synthesis: step %d/%d (%.0f s)", step, total, now - started)
                last[0] = now

        result = synthesize(
            model, cond, sampler=sampler, steps=steps, samples=self.inputs.samples,
            seed=self.inputs.seed, device=self.inputs.device, progress=progress,
        )
        header = t1w.header.copy()
        header.set_data_dtype(np.float32)
        psr = np.where(mask, result.mean, 0).astype(np.float32)
        out = Path(runtime.cwd)
        self._results["psr"] = str(out / "psr.nii.gz")
        nb.Nifti1Image(psr, t1w.affine, header).to_filename(self._results["psr"])
        if result.std is not None:
            self._results["psr_std"] = str(out / "psr_std.nii.gz")
            std = np.where(mask, result.std, 0).astype(np.float32)
            nb.Nifti1Image(std, t1w.affine, header).to_filename(self._results["psr_std"])
        info = dict(result.info)
        info.update(sampler=choice.label, steps=steps, seconds=round(time.monotonic() - started, 2))
        if choice.student:
            info["scheduler"] = sampler
        self._results["info"] = str(out / "synthesis.json")
        Path(self._results["info"]).write_text(json.dumps(info, indent=2, default=str))
        return runtime
