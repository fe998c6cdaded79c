"""The rows a trained DEMIST brings to the evaluation table: where its quality comes from.

Beside DEMIST with its own default sampler, each row takes one thing away or
gives one thing for free, on the same held-out scans (issue 16, part 4):

- ``demist-paper``: the paper's sampler (DDIM, 20 steps, from pure noise, the
  denoiser's own clean estimates: no blend towards z_c); dropped, with a note,
  when the default is that sampler already;
- ``backbone-only``: the same sampler and start with every stream off, so the
  difference is what the conditioning streams steer;
- ``no-diffusion``: the PSR decoder on the conditioning latent z_c, no reverse
  process at all: what the aligned encoder alone gives;
- ``unet-regressor``: a deterministic 3D U-Net trained on the same patches
  with the same budget, the model a user would pick instead;
- ``ae-ceiling``: the measured PSR through the PSR autoencoder, the best any
  method working in that latent can do (a reference method: it needs the scan).

Both the train level (:mod:`demist_bids.training.pipeline`) and the external
validation (:mod:`.external`) build their rows here, so they are the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from demist_bids.training.heldout import ReferenceMethod, synthesize_in_brain_box


@dataclass(frozen=True)
class SamplerChoice:
    """How a diffusion row samples (the arguments of :func:`~demist_bids.inference.sampler.synthesize`)."""

    sampler: str
    steps: int
    start: float = 1.0
    samples: int = 1
    precision: str = "auto"
    anchor: bool = True
    """Blend the clean-latent estimates towards z_c where the model has fitted weights
    (``ModelConfig.anchor``); False: the denoiser's own estimates."""

    def same_chain(self, other: SamplerChoice) -> bool:
        """True when both run the same chains (sampler, steps, start, samples and blend)."""
        return (self.sampler, int(self.steps), float(self.start), self.samples, self.anchor) == (
            other.sampler, int(other.steps), float(other.start), other.samples, other.anchor)

    def describe(self) -> str:
        start = ("from pure noise" if self.start >= 1
                 else f"from the conditioning latent noised to {self.start:g}")
        text = f"{self.sampler.upper()}, {self.steps} steps {start}"
        text += f", mean of {self.samples} samples" if self.samples > 1 else ""
        return text + ("" if self.anchor else ", no blend towards z_c")


PAPER_SAMPLER = SamplerChoice("ddim", 20, 1.0, anchor=False)
"""The DEMIST paper's sampler: DDIM, 20 steps, from pure noise (``demist-paper``)."""


def diffusion_synthesizer(model, choice: SamplerChoice, *, seed: int, device: str) -> Callable:
    """condition -> PSR map (PSR units) by ``choice``'s reverse process."""
    from demist_bids.inference.sampler import synthesize

    def run(cond: np.ndarray) -> np.ndarray:
        return synthesize(model, cond, sampler=choice.sampler, steps=choice.steps, samples=choice.samples,
                          seed=seed, device=device, start=choice.start, precision=choice.precision,
                          anchor=choice.anchor and model.anchored).mean

    return run


@dataclass
class DemistRows:
    """What :func:`demist_rows` gives :func:`~demist_bids.training.heldout.evaluate_fold`."""

    synthesizers: dict[str, Callable[[np.ndarray], np.ndarray]]
    references: dict[str, ReferenceMethod]
    notes: list[str]
    """Plain sentences for the report: samplers used, rows left out and why."""


def demist_rows(model, default: SamplerChoice, *, seed: int, device: str,
                regressor_dir: Path | None = None, paper_samples: int | None = None,
                student=None) -> DemistRows:
    """DEMIST's rows (see the module docstring) for a trained ``model``.

    Args:
        default: the sampler of the ``demist`` row (the model's shipped default).
        student: the model's distilled student (:mod:`demist_bids.training.distill`). It is
            then what the participant level runs, so it makes the ``demist`` row (DDIM at its
            distilled step count) and the teacher's own default sampler the ``demist-teacher``
            row; every other row stays the teacher's.
        regressor_dir: a saved U-Net regressor (:mod:`demist_bids.models.regressor`);
            without one the ``unet-regressor`` row is left out, with a note.
        paper_samples: samples averaged by the ``demist-paper`` row (issue 16 allows the
            mean of up to 4); default: as many as the default sampler draws; 0 leaves the row out
            (it costs tens of network passes per scan).
    """
    from demist_bids.inference.sampler import decode_condition, reconstruct_psr
    from demist_bids.models.regressor import is_saved_regressor, load_regressor, predict_psr

    paper = replace(PAPER_SAMPLER, samples=paper_samples or default.samples, precision=default.precision)
    synthesizers = {"demist": diffusion_synthesizer(model, default, seed=seed, device=device)}
    notes = [f"DEMIST and backbone-only sample with the model's default sampler: {default.describe()}."]
    if student is not None:
        sampling = student.config.sampling
        distilled = SamplerChoice("ddim", int(sampling.distilled_steps or sampling.steps), 1.0, default.samples,
                                  sampling.precision)
        synthesizers = {"demist": diffusion_synthesizer(student, distilled, seed=seed, device=device),
                        "demist-teacher": synthesizers["demist"]}
        notes = [f"DEMIST samples with the model's distilled student (the participant level's default): "
                 f"{distilled.describe()}, classifier-free guidance {float(sampling.guidance):g}; demist-teacher "
                 f"and backbone-only with the teacher's own default sampler: {default.describe()}, guidance "
                 f"{float(model.config.sampling.guidance):g}."]
    if paper_samples == 0:
        notes.append("The demist-paper row was left out (no samples asked for).")
    elif default.same_chain(paper):
        notes.append("The default sampler is the paper's, so demist-paper would repeat the demist row: "
                     "only one row is shown.")
    else:
        synthesizers["demist-paper"] = diffusion_synthesizer(model, paper, seed=seed, device=device)
        notes.append(f"demist-paper samples with the paper's sampler: {paper.describe()}.")
    synthesizers["backbone-only"] = diffusion_synthesizer(model.without_streams(), default, seed=seed, device=device)
    synthesizers["no-diffusion"] = lambda cond: decode_condition(model, cond, device=device,
                                                                 precision=default.precision)
    if regressor_dir is not None and is_saved_regressor(regressor_dir):
        net, config = load_regressor(regressor_dir, device=device)
        synthesizers["unet-regressor"] = lambda cond: predict_psr(net, config, cond, device=device)
    else:
        notes.append("No trained U-Net regressor was found"
                     + (f" in {regressor_dir}" if regressor_dir is not None else "")
                     + ": the unet-regressor row is left out.")

    def ae_ceiling(volume) -> np.ndarray:
        return synthesize_in_brain_box(
            lambda psr: reconstruct_psr(model, psr[0], device=device, precision=default.precision),
            volume.psr[None], volume.brain)

    return DemistRows(synthesizers, {"ae-ceiling": ae_ceiling}, notes)
