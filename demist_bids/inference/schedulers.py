"""Samplers for the latent diffusion: DDPM, DDIM (MONAI) and DPM-Solver++(2M).

Every scheduler here keeps MONAI's contract: ``set_timesteps(n, device)``, a
``timesteps`` tensor to loop over, and ``step(model_output, timestep, sample,
generator=None) -> (prev_sample, predicted_x0)``. The sampling loop never needs
to know which one it runs.

Two corrections to MONAI 1.6's ``DDIMScheduler`` are made by subclassing:

* its ``set_timesteps`` spaces timesteps with ``linspace(T-1, 0, n)`` while
  ``step`` assumes the previous timestep is ``t - T // n``; with 5 steps the
  network is then asked about noise level 749 for a sample that is at level
  799. :class:`DDIMSampler` uses *trailing* spacing ``T-1``, then every ``T/n`` (rounded)
  (Lin et al. 2024, https://arxiv.org/abs/2305.08891), for which both agree;
* its ``step`` goes to ``t - T // n``, so a step count that does not divide T
  ends short of the clean sample (14 steps ended at t = 5); :class:`DDIMSampler`
  steps to the next timestep of its own list and from the last one to t = 0;
* ``eta`` is a constructor argument, so ``step`` has the common signature.

Every scheduler is fed epsilon: :meth:`DemistModel.predict_noise` converts a
v-predicting network's output, so the schedulers are always built for
``epsilon`` whatever the model's ``prediction_type``.

``clip_sample`` is always off: latents are not confined to [-1, 1].
"""

from __future__ import annotations

import math

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from demist_bids.models.config import ScheduleConfig
from demist_bids.models.noise_schedule import schedule_arguments

__all__ = ["SAMPLERS", "trailing_timesteps", "DDIMSampler", "DPMSolverMultistepScheduler", "make_scheduler", "training_scheduler"]

SAMPLERS = ("ddpm", "ddim", "dpm++")
"""Names accepted by :func:`make_scheduler`."""


def _schedule_arguments(schedule: ScheduleConfig) -> dict:
    return dict(schedule_arguments(schedule), prediction_type="epsilon", clip_sample=False)


def trailing_timesteps(num_train_timesteps: int, steps: int, device: str | torch.device | None = None) -> torch.Tensor:
    """``T - 1``, then every ``T / steps`` (rounded): the sampling grid of every sampler here."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    stride = num_train_timesteps / steps
    times = [int(round(num_train_timesteps - i * stride)) - 1 for i in range(steps)]
    return torch.tensor(times, device=device, dtype=torch.long)


class DDIMSampler(DDIMScheduler):
    """MONAI DDIM with trailing timestep spacing and a fixed ``eta``.

    Args:
        schedule: training noise schedule.
        eta: 0 gives deterministic DDIM; 1 gives ancestral (DDPM-like) sampling
            on the shortened schedule.
    """

    def __init__(self, schedule: ScheduleConfig, eta: float = 0.0) -> None:
        super().__init__(**_schedule_arguments(schedule))
        self.eta = eta

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Trailing spacing: ``T - 1``, then every ``T / n`` (rounded), the last step ending at t = 0."""
        self.num_inference_steps = num_inference_steps
        self.timesteps = trailing_timesteps(self.num_train_timesteps, num_inference_steps, device)
        self._next = {int(a): int(b) for a, b in zip(self.timesteps[:-1], self.timesteps[1:])}

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update (Song et al. 2021, eq. 12) to the next timestep of the list.

        From the last timestep of the list the update goes to the clean sample
        (abar = 1), so every step count ends at t = 0.

        Returns:
            The sample at the next timestep and the predicted clean sample.
        """
        timestep = int(timestep)
        abar = self.alphas_cumprod[timestep].to(sample.device, torch.float32)
        following = self._next.get(timestep, -1)
        abar_next = (self.alphas_cumprod[following] if following >= 0 else torch.tensor(1.0)).to(
            sample.device, torch.float32)
        x0 = (sample - (1.0 - abar).sqrt() * model_output) / abar.sqrt()
        sigma = self.eta * ((1.0 - abar_next) / (1.0 - abar) * (1.0 - abar / abar_next)).clamp_min(0).sqrt()
        direction = (1.0 - abar_next - sigma**2).clamp_min(0).sqrt() * model_output
        prev = abar_next.sqrt() * x0 + direction
        if self.eta > 0 and following >= 0:
            noise = torch.randn(sample.shape, generator=generator, device=generator.device if generator else None)
            prev = prev + sigma * noise.to(sample.device)
        return prev, x0


class DPMSolverMultistepScheduler:
    """DPM-Solver++(2M): a second-order multistep ODE solver in data (x0) prediction.

    Lu et al. 2022, https://arxiv.org/abs/2211.01095 (Algorithm 2). With
    ``lambda = log(alpha / sigma)`` and step size ``h = lambda_next - lambda_now``::

        D = x0_now                                          (first step, last step)
        D = (1 + 1/(2r)) x0_now - 1/(2r) x0_prev,  r = h_prev / h   (otherwise)
        x_next = (sigma_next / sigma_now) x - alpha_next (exp(-h) - 1) D

    The last step goes to the clean sample (sigma = 0), where this reduces to
    ``x_next = x0_now``. Timesteps use the same trailing spacing as
    :class:`DDIMSampler`. Deterministic: ``generator`` is accepted and unused.

    Args:
        schedule: training noise schedule (epsilon prediction).
    """

    def __init__(self, schedule: ScheduleConfig) -> None:
        self.num_train_timesteps = schedule.num_train_timesteps
        self.alphas_cumprod = training_scheduler(schedule).alphas_cumprod.double()
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)
        self._previous_x0: torch.Tensor | None = None
        self._previous_h: float | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose ``num_inference_steps`` trailing timesteps and reset the solver history."""
        self.num_inference_steps = num_inference_steps
        self.timesteps = trailing_timesteps(self.num_train_timesteps, num_inference_steps, device)
        self._previous_x0 = None
        self._previous_h = None

    def _alpha_sigma(self, timestep: int) -> tuple[float, float]:
        if timestep < 0:
            return 1.0, 0.0
        abar = float(self.alphas_cumprod[timestep])
        return math.sqrt(abar), math.sqrt(1.0 - abar)

    def _next_timestep(self, timestep: int) -> int:
        times = [int(t) for t in self.timesteps]
        index = times.index(timestep)
        return times[index + 1] if index + 1 < len(times) else -1

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance from ``timestep`` to the next one of :attr:`timesteps`.

        Args:
            model_output: predicted noise, same shape as ``sample``.
            timestep: the current timestep (an element of :attr:`timesteps`).
            sample: current noisy sample x_t.
            generator: unused (the solver is deterministic).

        Returns:
            The sample at the next timestep and the predicted clean sample.
        """
        del generator
        timestep = int(timestep)
        alpha_now, sigma_now = self._alpha_sigma(timestep)
        x0 = (sample - sigma_now * model_output) / alpha_now
        next_t = self._next_timestep(timestep)
        if next_t < 0:
            self._previous_x0, self._previous_h = None, None
            return x0, x0
        alpha_next, sigma_next = self._alpha_sigma(next_t)
        h = math.log(alpha_next / sigma_next) - math.log(alpha_now / sigma_now)
        if self._previous_x0 is None or self._previous_h is None:
            direction = x0
        else:
            r = self._previous_h / h
            direction = (1.0 + 0.5 / r) * x0 - (0.5 / r) * self._previous_x0
        prev_sample = (sigma_next / sigma_now) * sample - alpha_next * math.expm1(-h) * direction
        self._previous_x0, self._previous_h = x0, h
        return prev_sample, x0


def make_scheduler(name: str, schedule: ScheduleConfig, steps: int):
    """A sampling scheduler by name.

    ``ddpm`` at the full training length is MONAI's ``DDPMScheduler``; with
    fewer steps MONAI's DDPM indexes ``t - 1`` and would be wrong, so it becomes
    ancestral DDIM (``eta = 1``), the DDPM posterior on the shortened schedule.

    Args:
        name: one of :data:`SAMPLERS`.
        schedule: the model's training schedule.
        steps: number of sampling steps.

    Returns:
        A scheduler with ``set_timesteps(steps)`` already called.
    """
    if name == "ddpm" and steps == schedule.num_train_timesteps:
        scheduler = training_scheduler(schedule)
    elif name == "ddpm":
        scheduler = DDIMSampler(schedule, eta=1.0)
    elif name == "ddim":
        scheduler = DDIMSampler(schedule, eta=0.0)
    elif name in ("dpm++", "dpmpp", "dpm-solver++"):
        scheduler = DPMSolverMultistepScheduler(schedule)
    else:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")
    scheduler.set_timesteps(steps)
    return scheduler


def training_scheduler(schedule: ScheduleConfig) -> DDPMScheduler:
    """MONAI DDPM scheduler of the training schedule (``add_noise``, ``alphas_cumprod``)."""
    return DDPMScheduler(**_schedule_arguments(schedule))
