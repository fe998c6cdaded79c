"""The deterministic baseline a user would pick instead of DEMIST: a 3D U-Net regressor.

T1w+FLAIR -> PSR / psr_scale with MONAI's ``BasicUNet``, trained with L1 on
the same patches as the diffusion model (training stage ``regressor``) and
applied over a whole brain box by Gaussian-blended sliding windows of the
training patch size. It is the ``unet-regressor`` row of the evaluation: if
DEMIST cannot beat it, the diffusion model is not where the quality comes
from (issue 16). GroupNorm rather than BasicUNet's instance norm: the tiny
test patches leave one voxel at the bottleneck, where instance norm is
undefined, and it normalizes windows at inference as it did patches.

A saved regressor is a directory of ``regressor.json`` and ``regressor.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CONFIG_NAME = "regressor.json"
WEIGHTS_NAME = "regressor.safetensors"


@dataclass
class RegressorConfig:
    """What rebuilds and applies a trained regressor."""

    features: list[int] = field(default_factory=lambda: [16, 16, 32, 64, 128, 16])
    """BasicUNet widths: four encoder levels, the bottleneck, the last decoder level."""
    norm_groups: int = 8
    """GroupNorm groups (must divide every width)."""
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])
    """Training patch, and the sliding window at inference."""
    psr_scale: float = 1.0
    """PSR value of 1.0 on the network's output scale (the cohort-wide constant)."""
    in_channels: int = 2

    def __post_init__(self) -> None:
        if len(self.features) != 6 or any(int(f) < 1 for f in self.features):
            raise ValueError(f"regressor features must be six positive widths, got {self.features}")
        if any(int(f) % self.norm_groups for f in self.features):
            raise ValueError(f"norm_groups {self.norm_groups} must divide every width of {self.features}")
        if not self.psr_scale > 0:
            raise ValueError(f"psr_scale must be positive, got {self.psr_scale}")


def build_regressor(config: RegressorConfig):
    """A fresh BasicUNet for ``config`` (torch is imported here, not at module load)."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=3, in_channels=config.in_channels, out_channels=1, features=tuple(config.features),
        norm=("group", {"num_groups": config.norm_groups}),
    )


def save_regressor(net, config: RegressorConfig, directory: Path) -> Path:
    """Write the weights and the configuration (the JSON last: it marks a complete save)."""
    from safetensors.torch import save_file

    from demist_bids.utils.atomic import atomic_path, atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME, ".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_text(directory / CONFIG_NAME, json.dumps(asdict(config), indent=2, sort_keys=True) + "\n")
    return directory


def is_saved_regressor(directory: Path) -> bool:
    return (Path(directory) / CONFIG_NAME).is_file() and (Path(directory) / WEIGHTS_NAME).is_file()


def load_regressor(directory: Path, device: str = "cpu"):
    """The network (eval mode, on ``device``) and configuration saved in ``directory``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = RegressorConfig(**json.loads((directory / CONFIG_NAME).read_text()))
    net = build_regressor(config)
    net.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
    return net.to(device).eval(), config


def predict_psr(net, config: RegressorConfig, cond: np.ndarray, *, device: str = "cpu",
                overlap: float = 0.5, window_batch: int = 4) -> np.ndarray:
    """PSR map (PSR units, ``cond``'s grid) of a 2 x X x Y x Z condition by sliding windows.

    Windows are the training patch; a volume smaller than one is zero-padded
    by MONAI and cropped back. Output clamped at 0 (PSR is a positive ratio).
    """
    import torch
    from monai.inferers import sliding_window_inference

    cond = np.ascontiguousarray(cond, dtype=np.float32)
    with torch.no_grad():
        image = torch.from_numpy(cond)[None].to(device)
        out = sliding_window_inference(image, roi_size=tuple(config.patch_size), sw_batch_size=window_batch,
                                       predictor=net.eval(), overlap=overlap, mode="gaussian")
    return (out[0, 0].clamp_(min=0.0).float().cpu().numpy() * config.psr_scale).astype(np.float32)
