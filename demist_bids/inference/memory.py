"""Whole-volume or sliding-window latent inference, chosen from available memory.

The estimates are linear in the number of voxels, calibrated on the paper
networks on CPU (REFERENCE §2: UNet+ControlNet 4.9 GB at a 40x48x40 latent,
decoder 8.8 GB and encoder 5.2 GB on 160x192x160), plus the quadratic attention
matrix where attention is not computed by SDPA. They err on the generous side;
only a window that does not fit is a failure, a window that was not needed
costs some speed.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from demist_bids.models.config import ModelConfig

LOGGER = logging.getLogger("demist.inference")

__all__ = ["InferencePlan", "available_memory_bytes", "estimate_bytes", "plan_inference"]

_UNET_FLOATS_PER_C0_VOXEL = 48  # live activations per latent voxel per first-level channel
_CONTROLNET_FACTOR = 1.4
_DECODER_FLOATS_PER_C0_VOXEL = 8
_ENCODER_FLOATS_PER_C0_VOXEL = 5
_SAFETY = 0.7  # fraction of the free memory we allow ourselves
MAX_WINDOW_BATCH = 4
"""Most windows per network call: 2-4 already reach oneDNN's per-window speed on CPUs."""


@dataclass(frozen=True)
class InferencePlan:
    """How one volume is processed."""

    whole: bool
    """True: every network sees the whole (padded) volume at once."""
    latent_window: tuple[int, int, int] | None
    """Sliding-window size in latent voxels when not whole."""
    estimated_gb: float
    """Estimated peak of the whole-volume path."""
    budget_gb: float
    """Memory the plan was made against."""
    window_batch: int = 1
    """Windows per network call wherever a pass runs in windows (autoencoders always do)."""


def available_memory_bytes(device: str) -> int:
    """Free memory of the device: CUDA ``mem_get_info`` or the kernel's MemAvailable."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def estimate_bytes(config: ModelConfig, image_shape: tuple[int, int, int], sdpa: bool) -> int:
    """Estimated peak bytes of whole-volume inference (largest of encode, denoise step, decode).

    Args:
        config: the model configuration.
        image_shape: padded image size X x Y x Z.
        sdpa: whether attention runs through SDPA (no N x N matrix kept).
    """
    voxels = math.prod(image_shape)
    f = config.autoencoder.downsampling
    latent_voxels = voxels / f**3
    ae_c0 = config.autoencoder.channels[0]
    c0 = config.unet.channels[0]
    unet = latent_voxels * c0 * _UNET_FLOATS_PER_C0_VOXEL * 4
    if config.streams.spatial:
        unet *= _CONTROLNET_FACTOR
    if not sdpa:
        for level, (has_attention, head_channels) in enumerate(
            zip(config.unet.attention_levels, config.unet.num_head_channels)
        ):
            if has_attention:
                tokens = latent_voxels / 8**level
                heads = config.unet.channels[level] // max(head_channels, 1)
                unet += 2 * tokens * tokens * heads * 4
    decode = voxels * ae_c0 * _DECODER_FLOATS_PER_C0_VOXEL * 4
    encode = voxels * ae_c0 * _ENCODER_FLOATS_PER_C0_VOXEL * 4
    return int(max(unet, decode, encode))


def plan_inference(
    config: ModelConfig,
    image_shape: tuple[int, int, int],
    device: str,
    *,
    sdpa: bool,
    budget_bytes: int | None = None,
    window: str | tuple[int, int, int] = "auto",
) -> InferencePlan:
    """Whole volume if its estimate fits the budget, else a latent sliding window.

    Args:
        config: the model configuration.
        image_shape: padded image size.
        device: ``cpu`` or ``cuda[:n]``.
        sdpa: whether attention uses SDPA.
        budget_bytes: override of the free memory (tests, ``--mem``).
        window: ``auto`` (decide from memory), ``whole``, or a latent window to force.

    Returns:
        The plan; the window is the training patch size in latent voxels, and as many
        windows (up to :data:`MAX_WINDOW_BATCH`) go through a network at once as fit.
    """
    budget = budget_bytes if budget_bytes is not None else int(available_memory_bytes(device) * _SAFETY)
    estimate = estimate_bytes(config, image_shape, sdpa)
    f = config.autoencoder.downsampling
    if window == "auto":
        whole = estimate <= budget
        latent_window = None if whole else tuple(max(p // f, config.unet.downsampling) for p in config.patch_size)
    elif window == "whole":
        whole, latent_window = True, None
    else:
        whole, latent_window = False, tuple(int(w) for w in window)
    per_window = estimate_bytes(config, tuple(int(p) for p in config.patch_size), sdpa)
    batch = int(max(1, min(MAX_WINDOW_BATCH, budget // max(per_window, 1))))
    plan = InferencePlan(whole, latent_window, estimate / 1e9, budget / 1e9, batch)
    LOGGER.info(
        "inference plan: %s, %d window(s) per call (estimate %.1f GB, budget %.1f GB)",
        "whole volume" if whole else f"latent window {latent_window}",
        batch,
        plan.estimated_gb,
        plan.budget_gb,
    )
    return plan
