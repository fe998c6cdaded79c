"""Choosing the default sampler: the fastest option as accurate as the 1000-step reference.

Issue 9's rule: among the options whose PSNR against the true PSR is within
``tolerance_db`` (0.3 dB) of the reference sampler's (DDPM, 1000 steps, as
trained), take the one with the shortest wall time. The participant level
reads the result from the model config (``ModelConfig.sampling``);
:func:`record_choice` writes it there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from demist_bids.models.config import ModelConfig

__all__ = ["SamplerTrial", "fastest_within_tolerance", "record_choice"]

PSNR_TOLERANCE_DB = 0.3


@dataclass
class SamplerTrial:
    """One sampler option measured on the same inputs as the reference."""

    sampler: str
    steps: int
    seconds: float
    psnr_truth: float
    """PSNR against the true PSR (nan when no truth was given)."""
    psnr_reference: float = math.nan
    ssim_truth: float = math.nan
    ssim_reference: float = math.nan
    peak_mem_gb: float = math.nan
    precision: str = ""
    """Forced precision (``bf16``/``fp32``); empty for the device default."""
    start: float = 1.0
    """Where on the noise schedule the reverse process starts (1.0: pure noise, the paper)."""

    @property
    def label(self) -> str:
        level = f"/{self.start:g}" if self.start < 1 else ""
        suffix = f"@{self.precision}" if self.precision else ""
        return f"{self.sampler}:{self.steps}{level}{suffix}"


def fastest_within_tolerance(
    reference: SamplerTrial, options: list[SamplerTrial], tolerance_db: float = PSNR_TOLERANCE_DB
) -> SamplerTrial | None:
    """The fastest option whose truth PSNR is at most ``tolerance_db`` below the reference's.

    Returns None when no option qualifies (or no truth PSNR is known).
    """
    qualified = [
        option
        for option in options
        if math.isfinite(option.psnr_truth) and option.psnr_truth >= reference.psnr_truth - tolerance_db
    ]
    return min(qualified, key=lambda option: option.seconds) if qualified else None


def record_choice(config: ModelConfig, choice: SamplerTrial, reference: SamplerTrial) -> ModelConfig:
    """A copy of ``config`` recommending ``choice``, with the evidence in the model card."""
    updated = ModelConfig.from_dict(config.to_dict())
    updated.sampling.sampler = choice.sampler
    updated.sampling.steps = choice.steps
    updated.sampling.start = choice.start
    updated.sampling.precision = choice.precision or "auto"
    updated.sampling.validated = True
    updated.card = {
        **updated.card,
        "sampler_benchmark": {
            "reference": reference.label,
            "reference_is_paper": reference.sampler == "ddpm" and reference.steps == 1000 and reference.start >= 1,
            "reference_psnr_truth_db": round(reference.psnr_truth, 3),
            "choice_psnr_truth_db": round(choice.psnr_truth, 3),
            "choice": choice.label,
            "speedup": round(reference.seconds / choice.seconds, 2),
            "psnr_drop_db": round(reference.psnr_truth - choice.psnr_truth, 3),
        },
    }
    return updated
