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
    """Conditioning latent to the first feature width, ending in a zero-initialised 1x1x1 convolution.

    With ``hidden_layers`` > 0, that many 3x3x3 convolutions (SiLU) come first, as in
    ControlNet's own hint encoder: a single 1x1x1 map only rescales z_c's channels, while
    the streams must turn z_c into features the frozen encoder copy can use.

    Args:
        latent_channels: channels L of the conditioning latent.
        out_channels: channels of the UNet's first level.
        hidden_layers: 3x3x3 convolutions before the zero gate (0: the gate alone).
    """

    def __init__(self, latent_channels: int, out_channels: int, hidden_layers: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_channels
        for _ in range(hidden_layers):
            layers += [nn.Conv3d(width, out_channels, kernel_size=3, padding=1), nn.SiLU()]
            width = out_channels
        self.hidden = nn.Sequential(*layers)
        self.conv = nn.Conv3d(width, out_channels, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, z_c: torch.Tensor) -> torch.Tensor:
        """Args:
            z_c: B x L x h x w x d.

        Returns:
            B x channels[0] x h x w x d.
        """
        return self.conv(self.hidden(z_c))


def build_controlnet(config: UNetConfig, latent_channels: int, hint_layers: int = 0) -> ControlNet:
    """A ControlNet matching the backbone, with a latent-resolution hint embedding.

    Call :func:`copy_encoder_weights` afterwards to start it from the backbone.
    """
    controlnet = ControlNet(
        conditioning_embedding_in_channels=latent_channels,
        conditioning_embedding_num_channels=(config.channels[0],),
        **unet_arguments(config, latent_channels),
    )
    controlnet.controlnet_cond_embedding = LatentHintEmbedding(latent_channels, config.channels[0], hint_layers)
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
