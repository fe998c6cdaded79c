"""Adaptive stream: LoRA on Q, K, V and O of every self-attention of the frozen backbone.

Q, K and V are ``nn.Linear`` layers: peft injects standard LoRA into them
(``W + (alpha/r) B A``, B zero-initialised). The bundle's attention has no
output projection (``include_fc=False`` makes ``out_proj`` an Identity that
MONAI skips), so W_O = I there and its LoRA is a hand-made zero-initialised
low-rank delta ``x + (alpha/r) B A x`` installed as ``out_proj``.
"""

from __future__ import annotations

import logging

import torch
from monai.networks.blocks import SABlock
from torch import nn

__all__ = ["LowRankDelta", "attach_lora", "lora_parameters", "lora_up_parameters"]

LOGGER = logging.getLogger("demist.models")

LORA_TARGETS = ["to_q", "to_k", "to_v"]


class LowRankDelta(nn.Module):
    """Identity plus a zero-initialised low-rank update: the LoRA of an identity projection.

    Args:
        features: width of the projection.
        rank: r.
        alpha: scaling numerator (update scaled by alpha / r).
    """

    def __init__(self, features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.lora_A = nn.Linear(features, rank, bias=False)
        self.lora_B = nn.Linear(rank, features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5**0.5)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: B x N x features.

        Returns:
            B x N x features.
        """
        return x + self.scaling * self.lora_B(self.lora_A(x))


def attach_lora(backbone: nn.Module, rank: int, alpha: float) -> None:
    """Inject LoRA into every self-attention of ``backbone`` in place.

    Args:
        backbone: a MONAI ``DiffusionModelUNet`` built with ``include_fc=False``.
        rank: LoRA rank r.
        alpha: LoRA alpha.
    """
    from peft import LoraConfig, inject_adapter_in_model

    blocks = [m for m in backbone.modules() if isinstance(m, SABlock)]
    if not blocks:
        LOGGER.warning("backbone has no attention: the adaptive stream adds nothing")
        return
    inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS), backbone
    )
    for block in blocks:
        if block.include_fc:
            raise ValueError("expected attention without output projection (include_fc=False)")
        block.out_proj = LowRankDelta(block.inner_dim, rank, alpha)
        block.include_fc = True  # MONAI applies out_proj only when this is set


def lora_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (peft's and the output deltas) inside ``backbone``."""
    return [p for name, p in backbone.named_parameters() if ".lora_" in name]


def lora_up_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The zero-initialised factors B of the adapters: the adaptive stream's join to the backbone."""
    return [p for name, p in backbone.named_parameters() if ".lora_B." in name]
