"""A learned skip from z_c into the denoiser's clean-latent estimate (``StreamsConfig.condition_skip``).

Issue 16: from pure noise, the streams' estimate of z_y is worse than the aligned
conditioning latent z_c itself, and a blend towards z_c fitted after training
(``ModelConfig.anchor``) closes that gap only as a step added to the sampler. This
module puts the blend inside the denoiser and trains it with the streams:

    x0(z_t, t) = (1 - a_c(t)) * x0_network(z_t, t; z_c) + a_c(t) * z_c

per latent channel c, with ``a`` a sigmoid of one learned logit per knot and
channel, linear between knots. The clean estimate is affine in the network's
output (epsilon or v) at fixed z_t, so the same ``a`` blends the output with the
output whose clean estimate is z_c, and every caller (loss, guidance, samplers,
distillation, diagnostics) sees the blended denoiser without knowing. The
weights start at ``1 - abar(t)``: the blend a Gaussian posterior with unit
prior variance gives between z_c and the naive estimate ``z_t / sqrt(abar)``,
so z_c dominates at high noise and z_t at low noise from the first step.

It is not the paper's denoiser (the paper has no path from z_c to the output
but the streams); a model carrying it says so in its config and card.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SKIP_KNOTS", "ConditionSkip"]

SKIP_KNOTS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)
"""Timesteps carrying a learned weight; between them the weight is interpolated linearly."""

_EDGE = 1e-3  # initial weights are kept inside (EDGE, 1 - EDGE) so their logits are finite


class ConditionSkip(nn.Module):
    """Per-knot, per-channel blend weights ``a(t)`` towards z_c, and the blend itself.

    Args:
        alphas_cumprod: abar_t of the training schedule (T values).
        channels: latent channels L.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, channels: int) -> None:
        super().__init__()
        total = int(alphas_cumprod.shape[0])
        knots = [k for k in SKIP_KNOTS if k < total] or [total - 1]
        if knots[-1] != total - 1:
            knots.append(total - 1)
        self.register_buffer("knots", torch.tensor(knots, dtype=torch.float32), persistent=False)
        start = (1.0 - alphas_cumprod[knots].float()).clamp(_EDGE, 1.0 - _EDGE)
        self.logits = nn.Parameter(torch.logit(start).unsqueeze(1).repeat(1, channels).contiguous())

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """``a(t)`` for each timestep of ``t`` (B), as B x L."""
        table = torch.sigmoid(self.logits)
        knots = self.knots.to(table.device)
        t = t.to(table.device).float().clamp(knots[0], knots[-1])
        upper = torch.searchsorted(knots, t).clamp(1, len(knots) - 1)
        lower = upper - 1
        span = knots[upper] - knots[lower]
        w = ((t - knots[lower]) / span).unsqueeze(1)
        return (1.0 - w) * table[lower] + w * table[upper]

    def forward(self, output: torch.Tensor, towards: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``output`` moved by ``a(t)`` towards ``towards`` (the output whose clean estimate is z_c)."""
        a = self.weights(t).to(output.dtype).view(output.shape[0], output.shape[1], *([1] * (output.ndim - 2)))
        return output + a * (towards - output)
