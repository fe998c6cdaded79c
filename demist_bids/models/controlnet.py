"""Spatial stream: a ControlNet copy of the backbone encoder fed the conditioning latent.

MONAI's ``ControlNet`` already joins its encoder copy to the UNet through
zero-initialised 1x1x1 convolutions (one per skip connection and one for the
middle block). Its conditioning embedding, however, downsamples the hint by
2^(n-1) for image-space hints; DEMIST's hint is the conditioning latent, already
at latent resolution, so the embedding is replaced by a single zero-initialised
1x1x1 convolution (L -> channels[0]). At initialisation every residual it emits
is exactly zero.
"""

from __future__ import annotations

import torch
from monai.networks.nets import ControlNet
from torch import nn

from demist_bids.models.config import UNetConfig
from demist_bids.models.unet import unet_arguments

__all__ = ["LatentHintEmbedding", "build_controlnet", "copy_encoder_weights"]


class LatentHintEmbedding(nn.Module):
    """Zero-initialised 1x1x1 convolution from the conditioning latent to the first feature width.

    Args:
        latent_channels: channels L of the conditioning latent.
        out_channels: channels of the UNet's first level.
    """

    def __init__(self, latent_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(latent_channels, out_channels, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, z_c: torch.Tensor) -> torch.Tensor:
        """Args:
            z_c: B x L x h x w x d.

        Returns:
            B x channels[0] x h x w x d.
        """
        return self.conv(z_c)


def build_controlnet(config: UNetConfig, latent_channels: int) -> ControlNet:
    """A ControlNet matching the backbone, with a latent-resolution hint embedding.

    Call :func:`copy_encoder_weights` afterwards to start it from the backbone.
    """
    controlnet = ControlNet(
        conditioning_embedding_in_channels=latent_channels,
        conditioning_embedding_num_channels=(config.channels[0],),
        **unet_arguments(config, latent_channels),
    )
    controlnet.controlnet_cond_embedding = LatentHintEmbedding(latent_channels, config.channels[0])
    return controlnet


def copy_encoder_weights(controlnet: ControlNet, backbone_state: dict[str, torch.Tensor]) -> None:
    """Initialise the ControlNet encoder from plain-key backbone weights.

    Every parameter of the copy (input conv, time embedding, down and middle
    blocks) must be found; the zero convolutions and hint embedding are left as
    they are.
    """
    own = controlnet.state_dict()
    copied = {key: backbone_state[key] for key in own if key in backbone_state}
    expected = {
        key
        for key in own
        if not key.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding"))
    }
    missing = sorted(expected - set(copied))
    if missing:
        raise KeyError(f"backbone lacks ControlNet encoder weights: {missing[:5]}")
    controlnet.load_state_dict(copied, strict=False)
