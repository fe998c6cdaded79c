"""Fit the blend of the denoiser's clean-latent estimate towards z_c (``ModelConfig.anchor``).

Issue 16: from pure noise, the trained denoiser's estimate of z_y is worse than the
aligned conditioning latent z_c at high noise and better at low noise, where the
noisy latent already carries the answer. The least-squares blend of the two, per
noise level and latent channel, is never worse than either on the patches it is
fitted on (the weight is clipped to [0, 1], which contains both), and the sampler
then starts from the better estimate and lets the network take over as the noise
falls. Fitted after the streams, with the guidance the model samples with.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from demist_bids.models.config import AnchorConfig

LOGGER = logging.getLogger("demist.train")

__all__ = ["ANCHOR_KNOTS", "fit_anchor"]

ANCHOR_KNOTS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)
"""Timesteps the weights are fitted at; the sampler interpolates between them."""


@torch.no_grad()
def fit_anchor(model, batches: Iterable[dict], *, guidance: float | None = None,
               knots: Iterable[int] = ANCHOR_KNOTS, seed: int = 0) -> tuple[AnchorConfig, list[dict]]:
    """The per-knot, per-channel least-squares blend weights on ``batches``.

    Args:
        model: a trained :class:`~demist_bids.models.demist.DemistModel` (eval mode).
        batches: dicts with ``psr01`` (B x 1 x patch) and ``cond`` (B x 2 x patch) tensors
            on the model's device, e.g. ``PatchSampler.fixed_batches``.
        guidance: classifier-free guidance of the noise estimate (default: the model's).
        knots: timesteps to fit at (increasing, within the training schedule).
        seed: seeds the noise added to the patches.

    Returns:
        The :class:`AnchorConfig` and, per knot, the latent mean squared error of the
        network's estimate, of z_c and of the blend (what the card reports).
    """
    knots = [int(k) for k in knots]
    total = int(model.config.schedule.num_train_timesteps)
    if not knots or knots != sorted(set(knots)) or knots[0] < 0 or knots[-1] >= total:
        raise ValueError(f"anchor knots must increase within [0, {total}), got {knots}")
    scale = float(model.config.sampling.guidance if guidance is None else guidance)
    pairs = [(model.encode_psr(b["psr01"]), model.encode_condition(b["cond"])) for b in batches]
    if not pairs:
        raise ValueError("no training patches to fit the anchor weights on")
    channels = pairs[0][0].shape[1]
    dims = (0, *range(2, pairs[0][0].ndim))
    generator = torch.Generator().manual_seed(seed)
    weights, report = [], []
    for t in knots:
        abar = float(model.alphas_cumprod[t])
        cross = torch.zeros(channels, dtype=torch.float64)
        norm = torch.zeros(channels, dtype=torch.float64)
        sq_model = sq_cond = torch.zeros(channels, dtype=torch.float64)
        grams = []
        for z_y, z_c in pairs:
            noise = torch.randn(z_y.shape, generator=generator).to(z_y.device)
            z_t = math.sqrt(abar) * z_y + math.sqrt(1.0 - abar) * noise
            steps = torch.full((z_y.shape[0],), t, device=z_y.device, dtype=torch.long)
            eps = model.predict_noise(z_t, steps, z_c)
            if scale != 1.0:
                unconditional = model.backbone_noise(z_t, steps)
                eps = unconditional + scale * (eps - unconditional)
            x0 = (z_t - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
            towards, residual = z_c - x0, z_y - x0
            cross += (towards * residual).sum(dims).double().cpu()
            norm += (towards * towards).sum(dims).double().cpu()
            sq_model = sq_model + (residual * residual).sum(dims).double().cpu()
            sq_cond = sq_cond + ((z_y - z_c) ** 2).sum(dims).double().cpu()
            grams.append(towards.numel() // channels)
        a = (cross / norm.clamp_min(1e-12)).clamp(0.0, 1.0)
        # ||r - a d||^2 = ||r||^2 - 2 a <d, r> + a^2 ||d||^2, per channel
        sq_blend = sq_model - 2 * a * cross + a * a * norm
        count = sum(grams) * channels
        weights.append([round(float(v), 6) for v in a])
        report.append({"timestep": t, "mse_model": float(sq_model.sum()) / count,
                       "mse_condition": float(sq_cond.sum()) / count, "mse_blend": float(sq_blend.sum()) / count})
        LOGGER.info("anchor t=%d: weights %s; latent MSE model %.4f, z_c %.4f, blend %.4f", t,
                    [f"{v:.2f}" for v in weights[-1]], *(report[-1][k] for k in ("mse_model", "mse_condition",
                                                                              "mse_blend")))
    patches = sum(z_y.shape[0] for z_y, _ in pairs)
    return AnchorConfig(timesteps=knots, weights=weights, guidance=scale, patches=patches), report
