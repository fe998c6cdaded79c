"""Semantic stream: condition tokens read by cross-attention beside the frozen UNet blocks.

DEMIST's first stream turns the conditioning latent into a short sequence of
tokens (1x1x1 convolution, pooling to a fixed grid, 3D sinusoidal positional
encoding) and lets the UNet's hidden features attend to them at every scale.
MONAI's ``with_conditioning`` would swap the pretrained attention blocks for
transformer blocks, so instead each frozen ``SpatialAttentionBlock`` of the
backbone gets a forward hook that adds a cross-attention residual whose output
projection starts at zero: at initialisation the backbone is unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from monai.networks.blocks import CrossAttentionBlock
from monai.networks.blocks.spatialattention import SpatialAttentionBlock
from torch import nn

__all__ = ["sinusoidal_position_encoding_3d", "SemanticTokenizer", "FeatureCrossAttention", "SemanticStream"]


def sinusoidal_position_encoding_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed 3D sine/cosine encoding of the token positions.

    Each axis gets ``2 * (dim // 6)`` channels of sines and cosines at
    geometric frequencies; leftover channels are zero.

    Args:
        grid: tokens along each axis.
        dim: token width d.

    Returns:
        N x d tensor, N = prod(grid), in C-order of the grid.
    """
    per_axis = dim // 6
    encoding = torch.zeros(*grid, dim)
    if per_axis == 0:
        return encoding.reshape(-1, dim)
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(per_axis) / per_axis)
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij")
    for index, position in enumerate(axes):
        angles = position[..., None] * frequencies
        start = 2 * per_axis * index
        encoding[..., start : start + per_axis] = torch.sin(angles)
        encoding[..., start + per_axis : start + 2 * per_axis] = torch.cos(angles)
    return encoding.reshape(-1, dim)


class SemanticTokenizer(nn.Module):
    """Conditioning latent to tokens: 1x1x1 conv, adaptive average pooling, positional encoding.

    Args:
        latent_channels: channels L of the conditioning latent.
        token_dim: token width d.
        grid: pooling grid; N = prod(grid) tokens whatever the input size.
    """

    def __init__(self, latent_channels: int, token_dim: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.project = nn.Conv3d(latent_channels, token_dim, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool3d(grid)
        self.register_buffer("position", sinusoidal_position_encoding_3d(grid, token_dim), persistent=False)

    def forward(self, z_c: torch.Tensor) -> torch.Tensor:
        """Args:
            z_c: B x L x h x w x d conditioning latent.

        Returns:
            B x N x token_dim tokens.
        """
        tokens = self.pool(self.project(z_c)).flatten(2).transpose(1, 2)
        return tokens + self.position.to(tokens.dtype)


class _TokenSlot:
    """The tokens of the current forward pass, shared by the stream and its hooks.

    A plain object (not a module) so ``copy.deepcopy`` of the model copies it
    once and re-binds every hook to the copy.
    """

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None


class FeatureCrossAttention(nn.Module):
    """Zero-initialised cross-attention residual from UNet features (queries) to tokens.

    Args:
        channels: feature channels C at this scale.
        token_dim: token width d.
        num_heads: attention heads (must divide C).
        norm_num_groups: GroupNorm groups applied to the queries.
        norm_eps: GroupNorm epsilon.
        slot: where the current tokens are read from.
    """

    def __init__(
        self,
        channels: int,
        token_dim: int,
        num_heads: int,
        norm_num_groups: int,
        norm_eps: float,
        slot: _TokenSlot,
    ) -> None:
        super().__init__()
        self.slot = slot
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
        self.attention = CrossAttentionBlock(
            hidden_size=channels,
            num_heads=num_heads,
            context_input_size=token_dim,
            qkv_bias=True,
        )
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Args:
            features: B x C x h x w x d hidden features.
            tokens: B x N x token_dim.

        Returns:
            B x C x h x w x d residual to add to ``features``.
        """
        shape = features.shape
        # contiguous(): GroupNorm's CPU backward segfaults (torch 2.13) on channels-last 3D
        # input that needs no gradient itself (frozen backbone features, batch > 1).
        queries = self.norm(features.contiguous()).reshape(*shape[:2], -1).transpose(1, 2)
        out = self.attention(queries, context=tokens.to(queries.dtype))
        return out.transpose(1, 2).reshape(shape)

    def residual_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Forward hook for a frozen attention block: add the residual while tokens are set."""
        if self.slot.tokens is None:
            return None
        return output + self(output, self.slot.tokens)


class SemanticStream(nn.Module):
    """Tokenizer plus one cross-attention per self-attention block of the backbone.

    The cross-attentions are hooked onto the backbone by :meth:`attach`; they
    act only inside :meth:`conditioned`, so the backbone alone stays usable
    (unconditional training of the backbone, zero-init checks).

    Args:
        backbone: the UNet whose ``SpatialAttentionBlock``s get a residual.
        latent_channels: channels of the conditioning latent.
        token_dim: token width.
        grid: token pooling grid.
        num_heads: heads per cross-attention (reduced where it does not divide C).
        norm_num_groups: GroupNorm groups for the queries.
        norm_eps: GroupNorm epsilon.
    """

    def __init__(
        self,
        backbone: nn.Module,
        latent_channels: int,
        token_dim: int,
        grid: tuple[int, int, int],
        num_heads: int,
        norm_num_groups: int,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.tokenizer = SemanticTokenizer(latent_channels, token_dim, grid)
        self.slot = _TokenSlot()
        targets = [m for m in backbone.modules() if isinstance(m, SpatialAttentionBlock)]
        self.cross_attentions = nn.ModuleList(
            FeatureCrossAttention(
                block.norm.num_channels,
                token_dim,
                math.gcd(num_heads, block.norm.num_channels),
                norm_num_groups,
                norm_eps,
                self.slot,
            )
            for block in targets
        )
        # Bound-method hooks: the backbone's state dict is untouched, and a deep
        # copy of the whole model re-binds them to the copied adapters.
        for block, adapter in zip(targets, self.cross_attentions):
            block.register_forward_hook(adapter.residual_hook)

    @contextlib.contextmanager
    def conditioned(self, z_c: torch.Tensor) -> Iterator[None]:
        """Within this context the hooked backbone attends to the tokens of ``z_c``."""
        self.slot.tokens = self.tokenizer(z_c)
        try:
            yield
        finally:
            self.slot.tokens = None
