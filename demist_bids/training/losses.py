"""The DEMIST training losses; none needs downloaded weights.

Stage 1 (autoencoders): ``L1 + w_kl KL + w_edge edge + w_adv GAN`` with a
least-squares patch adversarial loss (MONAI ``PatchAdversarialLoss``).
Stage 2 (streams): ``||eps - eps_theta||^2 + w_edge ||S(D(z0_hat)) - S(y)||_1
+ w_align ||z_c - z_y||^2`` where S is a 3D Sobel operator and
``z0_hat = (z_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)``, optionally
``+ w_dec ||D(z0_hat) - y||_1`` (``diffusion_decoded_weight``, not the paper's) and, with E_cond
trained in this stage, ``+ w_c ||D(z_c) - y||_1`` (``diffusion_cond_decoded_weight``). The weights are
the caller's (training recipe); these functions return unweighted means.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = [
    "noise_loss",
    "sobel_gradients",
    "edge_loss",
    "predicted_clean_latent",
    "alignment_loss",
    "kl_loss",
    "generator_adversarial_loss",
    "discriminator_loss",
    "autoencoder_loss",
]


def noise_loss(predicted: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and true noise (any shape)."""
    return F.mse_loss(predicted.float(), noise.float())


@functools.lru_cache(maxsize=8)
def _sobel_kernels(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    derivative = torch.tensor([-1.0, 0.0, 1.0])
    smooth = torch.tensor([1.0, 2.0, 1.0])
    kernels = []
    for axis in range(3):
        factors = [derivative if a == axis else smooth for a in range(3)]
        kernel = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
        kernels.append(kernel / 32.0)  # |kernel| sums to 32: unit slope gives gradient 1
    return torch.stack(kernels)[:, None].to(device=device, dtype=dtype)


def sobel_gradients(image: torch.Tensor) -> torch.Tensor:
    """3D Sobel gradients of every channel (edge-replicated borders).

    Args:
        image: B x C x H x W x D.

    Returns:
        B x 3C x H x W x D: d/dH, d/dW, d/dD of channel 0, then of channel 1, ...
        A ramp of slope 1 voxel^-1 gives 1.
    """
    channels = image.shape[1]
    kernels = _sobel_kernels(image.device, image.dtype).repeat(channels, 1, 1, 1, 1)
    padded = F.pad(image, (1, 1, 1, 1, 1, 1), mode="replicate")
    return F.conv3d(padded, kernels, groups=channels)


def edge_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance of the Sobel gradients (B x C x H x W x D inputs)."""
    return F.l1_loss(sobel_gradients(predicted.float()), sobel_gradients(target.float()))


def predicted_clean_latent(
    z_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """``z0_hat = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``.

    Args:
        z_t: B x L x h x w x d noisy latent.
        eps: same shape, predicted noise.
        t: B integer timesteps.
        alphas_cumprod: T cumulative products of the schedule's alphas.

    Returns:
        B x L x h x w x d predicted clean latent.
    """
    abar = alphas_cumprod.to(z_t.device)[t.long()].float().view(-1, *([1] * (z_t.ndim - 1)))
    return (z_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()


def alignment_loss(z_c: torch.Tensor, z_y: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the conditioning and PSR latents."""
    return F.mse_loss(z_c.float(), z_y.float())


def decoded_alignment_loss(decoded: torch.Tensor, psr01: torch.Tensor,
                           weights: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between a decoded PSR map and the measured one: of z_c in ``align``, of the streams' clean-latent
    estimate in ``diffusion`` (``diffusion_decoded_weight``). ``weights`` (one per patch, e.g. growing
    with the patch's timestep) weigh each patch's mean L1 before the batch mean; None: the plain mean."""
    if weights is None:
        return F.l1_loss(decoded.float(), psr01.float())
    per_patch = (decoded.float() - psr01.float()).abs().flatten(1).mean(1)
    return (weights.float().reshape(-1) * per_patch).mean()


def timestep_ramp(t: torch.Tensor, total: int, base: float, extra: float) -> torch.Tensor:
    """Per-patch weights ``base + extra * t / (total - 1)``: ``base`` at t = 0, ``base + extra`` at the
    noisiest timestep (``diffusion_decoded_high_noise_weight``)."""
    return base + extra * t.float() / (total - 1)


def lesion_l1_loss(decoded: torch.Tensor, psr01: torch.Tensor, lesion: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the batch's lesion voxels only (0 when it holds none).

    Lesions are under 1 % of a patch, so the whole-patch L1 barely sees them; averaging over lesion
    voxels alone gives them the weight of the rest of the patch (``diffusion_decoded_lesion_weight``).
    """
    mask = lesion.float()
    count = mask.sum()
    if count == 0:
        return decoded.float().sum() * 0.0  # keeps the graph (DDP ranks must all reduce)
    return ((decoded.float() - psr01.float()).abs() * mask).sum() / count


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of N(mu, sigma^2) from N(0, 1), summed over latent voxels, mean over the batch."""
    mu, sigma = z_mu.float(), z_sigma.float()
    per_voxel = mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2).clamp_min(1e-12)) - 1.0
    return 0.5 * per_voxel.flatten(1).sum(dim=1).mean()


@functools.lru_cache(maxsize=1)
def _adversarial():
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(criterion="least_squares")


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares patch GAN loss for the autoencoder: its reconstructions should look real."""
    return _adversarial()(fake_logits.float(), target_is_real=True, for_discriminator=False)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares patch GAN loss for the discriminator (mean of the real and fake terms)."""
    loss = _adversarial()
    real = loss(real_logits.float(), target_is_real=True, for_discriminator=True)
    fake = loss(fake_logits.float(), target_is_real=False, for_discriminator=True)
    return 0.5 * (real + fake)


def autoencoder_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    z_mu: torch.Tensor,
    z_sigma: torch.Tensor,
    *,
    kl_weight: float,
    edge_weight: float,
    adversarial_weight: float = 0.0,
    fake_logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The stage-1 loss and its parts.

    Args:
        reconstruction: B x C x H x W x D decoder output.
        target: the input image.
        z_mu: posterior means.
        z_sigma: posterior standard deviations.
        kl_weight: weight of the KL term.
        edge_weight: weight of the Sobel edge term.
        adversarial_weight: weight of the GAN term (used when ``fake_logits`` is given).
        fake_logits: discriminator output on ``reconstruction``.

    Returns:
        ``{"l1", "kl", "edge", ["adv"], "total"}``.
    """
    parts = {
        "l1": F.l1_loss(reconstruction.float(), target.float()),
        "kl": kl_loss(z_mu, z_sigma),
        "edge": edge_loss(reconstruction, target),
    }
    total = parts["l1"] + kl_weight * parts["kl"] + edge_weight * parts["edge"]
    if fake_logits is not None:
        parts["adv"] = generator_adversarial_loss(fake_logits)
        total = total + adversarial_weight * parts["adv"]
    parts["total"] = total
    return parts
