"""Semantic stream: condition tokens read by cross-attention beside the frozen UNet blocks.

DEMIST's first stream turns the conditioning latent into a short sequence of
tokens (1x1x1 convolution, pooling to a fixed grid, 3D sinusoidal positional
encoding) and lets the UNet's hidden features attend to them at every scale.
MONAI's ``with_conditioning`` would swap the pretrained attention blocks for
transformer blocks, so instead each frozen ``SpatialAttentionBlock`` of the
backbone gets a forward hook that adds a cross-attention residual whose output
projection starts at zero: at initialisation the backbone is unchanged.

Two token layouts (``StreamsConfig.token_stride``):

- *grid* (the paper): pool to a fixed grid of N tokens with absolute sinusoidal
  positions. Every query reads every token, and nothing tells a query where it
  is, so the stream can carry what the whole condition says but not where: from
  pure noise a semantic-only model gave noise (benchmarks/README, session 9). A
  fixed grid also means a token covers a quarter of a training patch along each
  axis in training and a quarter of the whole brain at inference.
- *local*: one token per ``stride^3`` latent voxels, and each query reads only
  the 3x3x3 tokens around its own position, weighted by a learned bias on the
  squared distance (per head). A token covers the same region in a patch and in
  a whole brain, positions are relative, so nothing is extrapolated, and the
  cost grows with the volume, not with its square.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from monai.networks.blocks import CrossAttentionBlock
from monai.networks.blocks.spatialattention import SpatialAttentionBlock
from torch import nn
from torch.nn import functional as F

__all__ = ["sinusoidal_position_encoding_3d", "SemanticTokenizer", "FeatureCrossAttention", "SemanticStream",
           "local_neighbourhood"]

_OFFSETS = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
"""The 27 token offsets a query reads in the local layout."""


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
    """Conditioning latent to tokens: 1x1x1 conv, average pooling, positions.

    Args:
        latent_channels: channels L of the conditioning latent.
        token_dim: token width d.
        grid: pooling grid of the *grid* layout; N = prod(grid) tokens whatever the input size.
        stride: latent voxels per token along each axis in the *local* layout (0: grid layout).
    """

    def __init__(self, latent_channels: int, token_dim: int, grid: tuple[int, int, int], stride: int = 0) -> None:
        super().__init__()
        self.stride = stride
        self.project = nn.Conv3d(latent_channels, token_dim, kernel_size=1)
        if not stride:
            self.pool = nn.AdaptiveAvgPool3d(grid)
            self.register_buffer("position", sinusoidal_position_encoding_3d(grid, token_dim), persistent=False)

    def token_grid(self, z_c: torch.Tensor) -> torch.Tensor:
        """B x token_dim x gh x gw x gd pooled projections, before positions."""
        projected = self.project(z_c)
        if not self.stride:
            return self.pool(projected)
        # a latent whose size is not a multiple of the stride (or is smaller than it) keeps its last,
        # partial tokens: the mean over the voxels their window holds
        spatial = projected.shape[2:]
        pad = [(-n) % self.stride for n in spatial]
        if not any(pad):
            return F.avg_pool3d(projected, self.stride)
        widths = (0, pad[2], 0, pad[1], 0, pad[0])
        inside = F.pad(torch.ones((1, 1, *spatial), device=projected.device, dtype=projected.dtype), widths)
        return F.avg_pool3d(F.pad(projected, widths), self.stride) / F.avg_pool3d(inside, self.stride)

    def forward(self, z_c: torch.Tensor) -> torch.Tensor:
        """Args:
            z_c: B x L x h x w x d conditioning latent.

        Returns:
            B x N x token_dim tokens (C-order of the token grid); in the grid layout with
            their sinusoidal positions added.
        """
        return self.flatten(self.token_grid(z_c))

    def flatten(self, grid: torch.Tensor) -> torch.Tensor:
        """Pooled projections to B x N x token_dim tokens (grid layout: plus positions)."""
        tokens = grid.flatten(2).transpose(1, 2)
        if self.stride:
            return tokens
        return tokens + self.position.to(tokens.dtype)


def local_neighbourhood(
    feature_shape: tuple[int, int, int], latent_shape: tuple[int, int, int], token_shape: tuple[int, int, int],
    stride: int, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which tokens each query reads in the local layout, and how far they are.

    Positions are voxel centres in latent units: query ``i`` of a level ``n`` long
    on an axis ``N`` latent voxels long sits at ``(i + 0.5) N / n``; token ``j`` at
    the centre of its pooling window ``[j stride, min((j + 1) stride, N))``.

    Returns:
        index (Q x 27, long): flat token index of each neighbour (0 where outside),
        valid (Q x 27, bool): the neighbour lies inside the token grid,
        distance2 (Q x 27): squared distance query-token in token strides.
    """
    axes = [(torch.arange(n, device=device, dtype=torch.float32) + 0.5) * (big / n)
            for n, big in zip(feature_shape, latent_shape)]
    position = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # Q x 3
    limits = torch.tensor(token_shape, device=device)
    cell = torch.minimum((position / stride).floor().long(), limits - 1)
    neighbour = cell[:, None, :] + _OFFSETS.to(device)[None]  # Q x 27 x 3
    valid = ((neighbour >= 0) & (neighbour < limits)).all(-1)
    clipped = torch.minimum(neighbour.clamp(min=0), limits - 1)
    index = (clipped[..., 0] * token_shape[1] + clipped[..., 1]) * token_shape[2] + clipped[..., 2]
    start = neighbour.float() * stride  # a token's centre is its window's, clipped where the latent ends
    centre = (start + torch.minimum(start + stride, torch.tensor(latent_shape, device=device))) / 2
    distance2 = ((position[:, None, :] - centre) / stride).square().sum(-1)
    return index, valid, distance2


class _TokenSlot:
    """The tokens of the current forward pass, shared by the stream and its hooks.

    A plain object (not a module) so ``copy.deepcopy`` of the model copies it
    once and re-binds every hook to the copy.
    """

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None
        self.latent_shape: tuple[int, int, int] | None = None
        """Spatial size of the conditioning latent (local layout: where the queries sit)."""
        self.token_shape: tuple[int, int, int] | None = None
        """Token grid size (local layout)."""
        self.neighbourhoods: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}
        """:func:`local_neighbourhood` per feature shape, for the current tokens: every attention
        block of a level (down, middle and up paths) in one pass reads the same one."""

    def neighbourhood(self, feature_shape: tuple[int, int, int], stride: int, device: torch.device):
        """:func:`local_neighbourhood` of a level, computed once per pass."""
        key = (*feature_shape, stride)
        if key not in self.neighbourhoods:
            self.neighbourhoods[key] = local_neighbourhood(
                feature_shape, self.latent_shape, self.token_shape, stride, device)
        return self.neighbourhoods[key]


class FeatureCrossAttention(nn.Module):
    """Zero-initialised cross-attention residual from UNet features (queries) to tokens.

    Args:
        channels: feature channels C at this scale.
        token_dim: token width d.
        num_heads: attention heads (must divide C).
        norm_num_groups: GroupNorm groups applied to the queries.
        norm_eps: GroupNorm epsilon.
        slot: where the current tokens are read from.
        stride: latent voxels per token of the local layout (0: every query reads every token).
    """

    def __init__(
        self,
        channels: int,
        token_dim: int,
        num_heads: int,
        norm_num_groups: int,
        norm_eps: float,
        slot: _TokenSlot,
        stride: int = 0,
    ) -> None:
        super().__init__()
        self.slot = slot
        self.stride = stride
        self.num_heads = num_heads
        if stride:
            # per head, the weight of a token falls as exp(-sharpness * distance^2); log-parametrised,
            # starting at 1 (a neighbour one stride away weighs e^-1 of one at the query's own position)
            self.log_sharpness = nn.Parameter(torch.zeros(num_heads))
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
        if self.stride:
            out = self._local(queries, tokens.to(queries.dtype), tuple(shape[2:]))
        else:
            out = self.attention(queries, context=tokens.to(queries.dtype))
        return out.transpose(1, 2).reshape(shape)

    def _local(self, queries: torch.Tensor, tokens: torch.Tensor, feature_shape: tuple[int, int, int]) -> torch.Tensor:
        """Attention of each query to its 27 neighbouring tokens, with the distance bias."""
        block = self.attention
        index, valid, distance2 = self.slot.neighbourhood(feature_shape, self.stride, queries.device)
        batch, count, _ = queries.shape
        heads = self.num_heads
        q = block.to_q(queries).reshape(batch, count, heads, -1)
        k = block.to_k(tokens).reshape(batch, tokens.shape[1], heads, -1)[:, index]  # B x Q x 27 x H x dh
        v = block.to_v(tokens).reshape(batch, tokens.shape[1], heads, -1)[:, index]
        scores = torch.einsum("bqhd,bqnhd->bqhn", q, k) * block.scale
        bias = -self.log_sharpness.exp()[:, None] * distance2[:, None, :]  # Q x H x 27
        scores = (scores + bias.to(scores.dtype)).masked_fill(~valid[:, None, :], float("-inf"))
        out = torch.einsum("bqhn,bqnhd->bqhd", scores.softmax(-1), v).reshape(batch, count, -1)
        return block.out_proj(out)

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
        stride: latent voxels per token of the local layout (0: the paper's fixed grid).
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
        stride: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer = SemanticTokenizer(latent_channels, token_dim, grid, stride)
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
                stride,
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
        grid = self.tokenizer.token_grid(z_c)
        self.slot.latent_shape = tuple(z_c.shape[2:])
        self.slot.token_shape = tuple(grid.shape[2:])
        self.slot.tokens = self.tokenizer.flatten(grid)
        self.slot.neighbourhoods = {}
        try:
            yield
        finally:
            self.slot.tokens = None
            self.slot.neighbourhoods = {}
