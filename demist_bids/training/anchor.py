"""Fit the blend of the denoiser's clean-latent estimate towards z_c (``ModelConfig.anchor``).

Issue 16: from pure noise, the trained denoiser's estimate of z_y is worse than the
aligned conditioning latent z_c at high noise and better at low noise, where the
noisy latent already carries the answer. The least-squares blend of the two, per
noise level and latent channel, is never worse than either on the patches it is
fitted on (the weight is clipped to [0, 1], which contains both), and the sampler
then starts from the better estimate and lets the network take over as the noise
falls. Fitted after the streams, with the guidance the model samples with.

Two ways to choose the noisy latents the weights are fitted on:

- ``steps=0``: the forward process, z_y noised to each of :data:`ANCHOR_KNOTS`.
  There z_t carries the truth, so at low noise the network looks better than it
  is inside a sampler, whose z_t carries only its own earlier estimates.
- ``steps=N``: the sampler's own chains, DDIM-N from pure noise on the patches,
  each step's weight fitted on the states the blended earlier steps produced, the
  knots being that sampler's timesteps. The final estimate is then, on these
  patches, no worse than z_c.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from demist_bids.models.config import AnchorConfig
from demist_bids.models.demist import blend_towards

LOGGER = logging.getLogger("demist.train")

__all__ = ["ANCHOR_KNOTS", "fit_anchor"]

ANCHOR_KNOTS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)
"""Timesteps the forward-process fit uses; the sampler interpolates between knots."""


class _Sums:
    """Per-channel sums over patches of one knot: <d, r>, <d, d>, |r|^2 and |z_y - z_c|^2."""

    def __init__(self, channels: int) -> None:
        zeros = lambda: torch.zeros(channels, dtype=torch.float64)  # noqa: E731
        self.cross, self.norm, self.model, self.condition = zeros(), zeros(), zeros(), zeros()
        self.count = 0

    def add(self, x0: torch.Tensor, z_y: torch.Tensor, z_c: torch.Tensor) -> None:
        dims = (0, *range(2, x0.ndim))
        towards, residual = z_c - x0, z_y - x0
        self.cross += (towards * residual).sum(dims).double().cpu()
        self.norm += (towards * towards).sum(dims).double().cpu()
        self.model += (residual * residual).sum(dims).double().cpu()
        self.condition += ((z_y - z_c) ** 2).sum(dims).double().cpu()
        self.count += x0.numel()

    def weights(self) -> torch.Tensor:
        return (self.cross / self.norm.clamp_min(1e-12)).clamp(0.0, 1.0)

    def report(self, t: int, a: torch.Tensor) -> dict:
        # ||r - a d||^2 = ||r||^2 - 2 a <d, r> + a^2 ||d||^2, per channel
        blend = self.model - 2 * a * self.cross + a * a * self.norm
        return {"timestep": t, "mse_model": float(self.model.sum()) / self.count,
                "mse_condition": float(self.condition.sum()) / self.count, "mse_blend": float(blend.sum()) / self.count}


def _noise_estimate(model, z_t: torch.Tensor, t: int, z_c: torch.Tensor, scale: float) -> torch.Tensor:
    steps = torch.full((z_t.shape[0],), t, device=z_t.device, dtype=torch.long)
    return model.guided_noise(z_t, steps, z_c, scale)


@torch.no_grad()
def fit_anchor(model, batches: Iterable[dict], *, guidance: float | None = None,
               knots: Iterable[int] = ANCHOR_KNOTS, steps: int = 0,
               seed: int = 0) -> tuple[AnchorConfig, list[dict]]:
    """The per-knot, per-channel least-squares blend weights on ``batches``.

    Args:
        model: a trained :class:`~demist_bids.models.demist.DemistModel` (eval mode).
        batches: dicts with ``psr01`` (B x 1 x patch) and ``cond`` (B x 2 x patch) tensors
            on the model's device, e.g. ``PatchSampler.fixed_batches``.
        guidance: classifier-free guidance of the noise estimate (default: the model's).
        knots: timesteps of the forward-process fit (increasing, within the training schedule).
        steps: 0 for the forward-process fit at ``knots``; N to fit along DDIM-N chains from
            pure noise (the knots are then that sampler's timesteps).
        seed: seeds the noise.

    Returns:
        The :class:`AnchorConfig` and, per knot, the latent mean squared error of the
        network's estimate, of z_c and of the blend (what the card reports).
    """
    total = int(model.config.schedule.num_train_timesteps)
    knots = [int(k) for k in knots]
    if not steps and (not knots or knots != sorted(set(knots)) or knots[0] < 0 or knots[-1] >= total):
        raise ValueError(f"anchor knots must increase within [0, {total}), got {knots}")
    scale = float(model.config.sampling.guidance if guidance is None else guidance)
    pairs = [(model.encode_psr(b["psr01"]), model.encode_condition(b["cond"])) for b in batches]
    if not pairs:
        raise ValueError("no training patches to fit the anchor weights on")
    channels = pairs[0][0].shape[1]
    generator = torch.Generator().manual_seed(seed)
    fitted: dict[int, tuple[list[float], dict]] = {}

    def fit_knot(t: int, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        abar = float(model.alphas_cumprod[t])
        sums, estimates = _Sums(channels), []
        for (z_y, z_c), z_t in zip(pairs, states):
            eps = _noise_estimate(model, z_t, t, z_c, scale)
            sums.add((z_t - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar), z_y, z_c)
            estimates.append(eps)
        a = sums.weights()
        fitted[t] = ([round(float(v), 6) for v in a], sums.report(t, a))
        LOGGER.info("anchor t=%d: weights %s; latent MSE model %.4f, z_c %.4f, blend %.4f", t,
                    [f"{v:.2f}" for v in fitted[t][0]],
                    *(fitted[t][1][k] for k in ("mse_model", "mse_condition", "mse_blend")))
        return a, estimates

    if steps:
        from demist_bids.inference.schedulers import make_scheduler

        scheduler = make_scheduler("ddim", model.config.schedule, int(steps))
        states = [torch.randn(z_y.shape, generator=generator).to(z_y.device) for z_y, _ in pairs]
        for t in (int(t) for t in scheduler.timesteps):
            a, estimates = fit_knot(t, states)
            view = a.to(states[0]).view(1, -1, *([1] * (states[0].ndim - 2)))
            abar = float(model.alphas_cumprod[t])
            for i, ((_, z_c), z_t, eps) in enumerate(zip(pairs, states, estimates)):
                states[i], _ = scheduler.step(blend_towards(eps, z_t, z_c, abar, view), t, z_t)
    else:
        for t in knots:
            noisy = []
            for z_y, _ in pairs:
                abar = float(model.alphas_cumprod[t])
                noise = torch.randn(z_y.shape, generator=generator).to(z_y.device)
                noisy.append(math.sqrt(abar) * z_y + math.sqrt(1.0 - abar) * noise)
            fit_knot(t, noisy)
    order = sorted(fitted)
    patches = sum(z_y.shape[0] for z_y, _ in pairs)
    anchor = AnchorConfig(timesteps=order, weights=[fitted[t][0] for t in order], guidance=scale, patches=patches,
                          steps=int(steps))
    return anchor, [fitted[t][1] for t in order]
