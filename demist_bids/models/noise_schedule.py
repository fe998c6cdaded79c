"""The training noise schedule as MONAI builds it, optionally rescaled to a near-zero terminal SNR.

The BraTS bundle's schedule (scaled linear, betas 0.0015 to 0.0195) keeps sqrt(abar) = 0.012 of
the clean latent in z_T. Averaged over a whole-brain latent (about 40 000 voxels a channel) that
is a channel mean readable at an SNR above 2, a signal the sampler's pure noise never carries;
Lin et al. 2024 (https://arxiv.org/abs/2305.08891, "Common diffusion noise schedules and sample
steps are flawed") found networks trained on such schedules relying on it. Rescaling fixes
sqrt(abar_0), moves sqrt(abar_T) to the SNR asked and keeps sqrt(abar_t) linear in the original
between them (their Algorithm 1). On demist's phantom recipes the network did not gain from that
signal (benchmarks/README, session 32), and the rescaled schedule is not used by a shipped model.

The terminal SNR stays above zero: every sampler here is fed epsilon
(:meth:`DemistModel.predict_noise`), and at abar = 0 no clean estimate follows from epsilon.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers.scheduler import NoiseSchedules

from demist_bids.models.config import ScheduleConfig

__all__ = ["RESCALED", "rescaled_terminal_snr", "schedule_arguments"]

RESCALED = "rescaled_terminal_snr"
"""The name this module registers in MONAI's ``NoiseSchedules``."""


@NoiseSchedules.add_def(RESCALED, "A named schedule rescaled to a terminal SNR (Lin et al. 2024)")
def rescaled_terminal_snr(num_train_timesteps: int, base: str = "scaled_linear_beta", terminal_snr: float = 1e-6,
                          **base_args) -> torch.Tensor:
    """Betas of ``base`` with sqrt(abar) shifted and scaled so that abar_T / (1 - abar_T) = ``terminal_snr``."""
    if not terminal_snr > 0:
        raise ValueError(f"terminal_snr must be > 0 (samplers are fed epsilon), got {terminal_snr}")
    betas = NoiseSchedules[base](num_train_timesteps, **base_args)
    if isinstance(betas, tuple):  # a schedule that returns (betas, alphas, alphas_cumprod)
        betas = betas[0]
    root = torch.cumprod(1.0 - betas.double(), dim=0).sqrt()
    first, last = root[0], root[-1]
    target = (terminal_snr / (1.0 + terminal_snr)) ** 0.5
    if not target < last:
        raise ValueError(f"terminal_snr {terminal_snr} is not below the {base} schedule's own "
                         f"({float(last ** 2 / (1 - last ** 2)):.3g})")
    root = (root - last) * (first - target) / (first - last) + target
    abar = root ** 2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return (1.0 - alphas).float()


def schedule_arguments(schedule: ScheduleConfig) -> dict:
    """MONAI scheduler arguments of ``schedule`` (the schedule's name and its function's arguments)."""
    arguments = dict(num_train_timesteps=schedule.num_train_timesteps, beta_start=schedule.beta_start,
                     beta_end=schedule.beta_end)
    if schedule.terminal_snr is None:
        return dict(arguments, schedule=schedule.schedule)
    return dict(arguments, schedule=RESCALED, base=schedule.schedule, terminal_snr=schedule.terminal_snr)
