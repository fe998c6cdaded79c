"""The diffusion backbone: MONAI ``DiffusionModelUNet`` in the BraTS bundle configuration.

The bundle's UNet must be built with ``include_fc=False`` and
``use_combined_linear=False`` for its (old MONAI GenerativeModels) weights to
load through ``load_old_state_dict``. It stays unconditional: turning on
``with_conditioning`` would replace every attention block and break the
pretrained keys, so the conditioning streams are attached beside it instead.

Once LoRA is injected, peft renames ``to_q.weight`` to
``to_q.base_layer.weight``; :func:`plain_state_dict` and
:func:`load_plain_state_dict` translate, so backbone weights are always stored
and exchanged in the plain MONAI key format.
"""

from __future__ import annotations

import logging

import torch
from monai.networks.nets import DiffusionModelUNet

from demist_bids.models.config import UNetConfig

LOGGER = logging.getLogger("demist.models")

__all__ = [
    "unet_arguments",
    "build_backbone",
    "convert_old_state_dict",
    "is_adapter_key",
    "plain_state_dict",
    "load_plain_state_dict",
]

_BASE_LAYER = ".base_layer."


def unet_arguments(config: UNetConfig, latent_channels: int) -> dict:
    """Keyword arguments shared by the backbone and its ControlNet copy (bundle key layout)."""
    return dict(
        spatial_dims=3,
        in_channels=latent_channels,
        channels=tuple(config.channels),
        attention_levels=tuple(config.attention_levels),
        num_head_channels=tuple(config.num_head_channels),
        num_res_blocks=(config.num_res_blocks,) * len(config.channels),
        norm_num_groups=config.norm_num_groups,
        norm_eps=config.norm_eps,
        include_fc=False,
        use_combined_linear=False,
    )


def build_backbone(config: UNetConfig, latent_channels: int) -> DiffusionModelUNet:
    """A randomly initialised, unconditional diffusion UNet.

    Args:
        config: backbone sizes.
        latent_channels: channels of the PSR latent (input and output).

    Returns:
        MONAI ``DiffusionModelUNet`` mapping B x L x h x w x d to the same shape.
    """
    return DiffusionModelUNet(out_channels=latent_channels, **unet_arguments(config, latent_channels))


def convert_old_state_dict(
    config: UNetConfig, latent_channels: int, old_state_dict: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Translate MONAI GenerativeModels (bundle) keys to MONAI 1.5+ keys.

    Loads into a plain UNet of the same configuration with MONAI's own
    ``load_old_state_dict`` (which checks every key) and returns its state dict.
    """
    plain = build_backbone(config, latent_channels)
    logging.getLogger("monai").debug("converting old-format backbone keys")
    plain.load_old_state_dict(dict(old_state_dict))
    return plain.state_dict()


def is_adapter_key(key: str) -> bool:
    """True for parameters that adapters (LoRA) add to the backbone."""
    return ".lora_" in key or ".out_proj." in key


def plain_state_dict(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's own weights under plain MONAI keys (adapters left out)."""
    return {
        key.replace(_BASE_LAYER, "."): value
        for key, value in backbone.state_dict().items()
        if not is_adapter_key(key)
    }


def load_plain_state_dict(backbone: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load plain-key weights into a backbone that may carry LoRA adapters.

    Raises:
        KeyError: when a backbone weight is missing from ``state`` or ``state``
            holds keys the backbone does not have.
    """
    own = backbone.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    expected = {key.replace(_BASE_LAYER, "."): key for key in own if not is_adapter_key(key)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(f"backbone weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for plain_key, own_key in expected.items():
        mapped[own_key] = state[plain_key]
    result = backbone.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise KeyError(f"unexpected backbone keys {result.unexpected_keys[:5]}")
