"""Tiny model configurations and helpers shared by the model and inference tests."""

from __future__ import annotations

import torch

from demist_bids.models.config import ModelConfig, preset


def tiny_config(ablation: str = "full", **overrides) -> ModelConfig:
    """A DEMIST with every part present (attention at two scales) but only ~1 M parameters."""
    base = dict(
        # a 4x latent with 8 channels, like the paper preset (the small preset has 2x, 4 channels)
        autoencoder={"channels": [8, 16, 16], "num_res_blocks": 1, "norm_num_groups": 4, "latent_channels": 8},
        unet={
            "channels": [16, 32, 32],
            "attention_levels": [False, True, True],
            "num_head_channels": [0, 16, 16],
            "num_res_blocks": 1,
            "norm_num_groups": 8,
        },
        streams={"token_dim": 12, "token_grid": [2, 2, 2], "cross_attention_heads": 2, "lora_rank": 2},
        patch_size=[32, 32, 32],
    )
    base.update(overrides)
    return preset("small", ablation=ablation, **base)


@torch.no_grad()
def pretend_pretrained(model, seed: int = 0) -> None:
    """Give the backbone non-trivial weights, as a pretrained one has.

    A fresh MONAI UNet ends in a zero convolution, so every model would predict
    zero noise and any equivalence check would pass trivially.
    """
    generator = torch.Generator().manual_seed(seed)
    for param in model.backbone_parameters():
        param.add_(0.05 * torch.randn(param.shape, generator=generator))
    model.sync_controlnet_from_backbone()


@torch.no_grad()
def pretend_trained_streams(model, seed: int = 1) -> None:
    """Move every stream parameter away from its zero initialisation."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.trainable_stream_parameters():
        param.add_(0.05 * torch.randn(param.shape, generator=generator))
