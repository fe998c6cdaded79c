"""Fitting any volume to the network's grid and back.

The autoencoders halve the size ``len(channels) - 1`` times and the UNet again
``len(channels) - 1`` times, so image sizes must be multiples of
``ModelConfig.size_multiple`` (16 for ``paper``, 8 for ``small``). Volumes are zero-padded
(zero is the background of skull-stripped, [0, 1]-scaled inputs) evenly on both
sides, and outputs are cropped back to exactly the input grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["content_box", "pad_to_multiple", "crop_to_original"]


def content_box(volume: np.ndarray, margin: int = 8) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of any channel, widened by ``margin``.

    Skull-stripped inputs are zero outside the head, so synthesizing only
    inside this box gives the same map for a fraction of the cost (network cost
    grows with the number of voxels).

    Args:
        volume: C x X x Y x Z.
        margin: voxels added on each side (clipped to the volume).

    Returns:
        Three spatial slices; the whole volume when it is all zero.
    """
    occupied = np.any(volume != 0, axis=0)
    if not occupied.any():
        return tuple(slice(0, n) for n in occupied.shape)
    box = []
    for axis, size in enumerate(occupied.shape):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(occupied.any(axis=others))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, size)))
    return tuple(box)


def pad_to_multiple(volume: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad the spatial axes (the last three) up to a multiple.

    Args:
        volume: C x X x Y x Z (or X x Y x Z) array.
        multiple: required divisor of each spatial size.

    Returns:
        The padded array and the spatial slices that recover the input grid.
    """
    spatial = volume.shape[-3:]
    padded = [int(np.ceil(n / multiple)) * multiple for n in spatial]
    before = [(p - n) // 2 for n, p in zip(spatial, padded)]
    widths = [(0, 0)] * (volume.ndim - 3) + [(b, p - n - b) for n, p, b in zip(spatial, padded, before)]
    crop = tuple(slice(b, b + n) for b, n in zip(before, spatial))
    return np.pad(volume, widths, mode="constant"), crop


def crop_to_original(volume: np.ndarray, crop: tuple[slice, ...]) -> np.ndarray:
    """Undo :func:`pad_to_multiple` on the last three axes."""
    return volume[(Ellipsis, *crop)]
