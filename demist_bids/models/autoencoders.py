"""The two 3D KL autoencoders (PSR and T1w+FLAIR) and their latent scale factors.

Both are MONAI ``AutoencoderKL`` with the same architecture and independent
weights (DEMIST stage 1; the
BraTS bundle's autoencoder for the ``paper`` preset). Latents are the posterior *mean*
(MONAI's ``encode_stage_2_inputs`` samples, which would make the condition
random) multiplied by a scale factor that gives them unit variance.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from monai.networks.nets import AutoencoderKL

from demist_bids.models.config import AutoencoderConfig

LOGGER = logging.getLogger("demist.models")

__all__ = ["build_autoencoder", "posterior_mean", "latent_scale_factor", "latent_channel_statistics"]


def build_autoencoder(config: AutoencoderConfig, in_channels: int) -> AutoencoderKL:
    """A randomly initialised KL autoencoder.

    Args:
        config: sizes shared by both autoencoders.
        in_channels: 1 for PSR, 2 for T1w+FLAIR; the decoder outputs as many.

    Returns:
        MONAI ``AutoencoderKL`` (no attention, like the BraTS bundle).
    """
    levels = len(config.channels)
    return AutoencoderKL(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=tuple(config.channels),
        num_res_blocks=(config.num_res_blocks,) * levels,
        attention_levels=(False,) * levels,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        norm_eps=config.norm_eps,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
        include_fc=False,
        use_combined_linear=False,
    )


def posterior_mean(autoencoder: AutoencoderKL, image: torch.Tensor) -> torch.Tensor:
    """Deterministic latent of an image.

    Args:
        autoencoder: the encoder to use.
        image: B x C x H x W x D.

    Returns:
        B x L x H/f x W/f x D/f posterior mean (unscaled).
    """
    z_mu, _ = autoencoder.encode(image)
    return z_mu


@torch.no_grad()
def latent_scale_factor(autoencoder: AutoencoderKL, batches: Iterable[torch.Tensor]) -> float:
    """``1 / std`` of the posterior means over many patches (not one batch, unlike the bundle).

    Args:
        autoencoder: a trained autoencoder.
        batches: iterable of B x C x H x W x D image patches.

    Returns:
        The factor that gives the latents unit standard deviation.
    """
    count, total, total_sq = 0, 0.0, 0.0
    for batch in batches:
        z = posterior_mean(autoencoder, batch).double()
        count += z.numel()
        total += float(z.sum())
        total_sq += float((z * z).sum())
    if count == 0:
        raise ValueError("no patches to compute the latent scale factor from")
    variance = max(total_sq / count - (total / count) ** 2, 1e-12)
    factor = variance**-0.5
    LOGGER.info("latent scale factor %.4f over %d latent values", factor, count)
    return factor


@torch.no_grad()
def latent_channel_statistics(autoencoder: AutoencoderKL, batches: Iterable[torch.Tensor]):
    """Per-channel mean and ``1 / std`` of the posterior means over many patches.

    Args:
        autoencoder: a trained autoencoder.
        batches: iterable of B x C x H x W x D image patches.

    Returns:
        ``(shift, scale)``, two lists of L floats: ``(mu - shift) * scale`` has zero
        mean and unit variance in every channel.
    """
    count, total, total_sq = 0, None, None
    for batch in batches:
        z = posterior_mean(autoencoder, batch).double().transpose(0, 1).flatten(1)
        count += z.shape[1]
        total = z.sum(1) if total is None else total + z.sum(1)
        total_sq = (z * z).sum(1) if total_sq is None else total_sq + (z * z).sum(1)
    if not count:
        raise ValueError("no patches to compute the latent statistics from")
    mean = total / count
    variance = (total_sq / count - mean**2).clamp_min(1e-12)
    LOGGER.info("latent channel means %s, stds %s", mean.tolist(), variance.sqrt().tolist())
    return mean.tolist(), variance.rsqrt().tolist()
