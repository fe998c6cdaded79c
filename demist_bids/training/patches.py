"""Random overlapping training patches, reproducible from (seed, rank, step).

Each batch draws scans uniformly and patch centres uniformly among brain
voxels, so patches overlap freely and cover the brain rather than background.
A stage can ask for a fraction of patches centred on lesion voxels instead
(scans without a lesion mask fall back to brain voxels): lesions are under 1 %
of the brain, so uniform patches rarely show a network what they look like
(MONAI's positive/negative crop sampling does the same).
Patches are cut with zero padding where they leave the volume (zero is the
background value of every channel). The random generator of a batch is built
from (seed, rank, step): a resumed run draws exactly the patches it would have
drawn, and DDP ranks draw different ones, with no generator state to save.

Augmentation, kept to what is cheap and anatomically plausible on a CPU:
left-right flips (the brain is roughly symmetric; axis 0 is left-right in RAS)
and a mild per-patch gain and gamma on T1w and FLAIR (their scale is only
relative). The PSR target is never rescaled: its units are the point.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from demist_bids.training.volumes import TrainingVolume


@dataclass(frozen=True)
class Augmentation:
    """Augmentation strengths (all off with ``enabled=False``)."""

    enabled: bool = True
    flip_probability: float = 0.5
    gain_range: tuple[float, float] = (0.9, 1.1)
    gamma_range: tuple[float, float] = (0.85, 1.15)


def _crop(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[..., start:start+size]`` over the last three axes, zero-padded outside."""
    out = np.zeros(array.shape[:-3] + tuple(size), dtype=array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, array.shape[-3:]):
        lo, hi = max(s, 0), min(s + n, dim)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - s, lo - s + max(hi - lo, 0)))
    out[(..., *dst)] = array[(..., *src)]
    return out


class PatchSampler:
    """Draws batches of (condition, PSR/psr_scale, brain mask) patches.

    Args:
        volumes: training scans on the model grid.
        patch_size: patch side lengths in voxels (multiples of the model's size multiple).
        psr_scale: the cohort-wide PSR value mapped to 1.0.
        seed: master seed; rank: this process's rank.
        augmentation: what to randomize.
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        patch_size: Sequence[int],
        psr_scale: float,
        *,
        seed: int,
        rank: int = 0,
        augmentation: Augmentation = Augmentation(),
    ) -> None:
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.psr_scale = float(psr_scale)
        self.seed = int(seed)
        self.rank = int(rank)
        self.augmentation = augmentation
        self._brain_voxels = [np.argwhere(v.brain) for v in self.volumes]
        # lesion voxels inside the brain, once per scan (None: the scan has no lesion mask)
        self._lesion_masks = [v.lesion & v.brain if v.lesion is not None else None for v in self.volumes]
        self._lesion_voxels = [
            np.argwhere(m) if m is not None else np.empty((0, 3), dtype=np.int64) for m in self._lesion_masks
        ]

    def _rng(self, step: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.rank, stream, step])

    def _one(self, rng: np.random.Generator, augment: bool, lesion_fraction: float = 0.0):
        index = int(rng.integers(len(self.volumes)))
        volume, voxels = self.volumes[index], self._brain_voxels[index]
        if lesion_fraction > 0 and rng.random() < lesion_fraction and len(self._lesion_voxels[index]):
            voxels = self._lesion_voxels[index]
        centre = voxels[int(rng.integers(len(voxels)))]
        start = [int(c) - p // 2 for c, p in zip(centre, self.patch_size)]
        cond = _crop(volume.cond, start, self.patch_size)
        psr = _crop(volume.psr, start, self.patch_size)[None] / self.psr_scale
        brain = _crop(volume.brain, start, self.patch_size)[None].astype(np.float32)
        mask = self._lesion_masks[index]
        lesion = (_crop(mask, start, self.patch_size)[None].astype(np.float32)
                  if mask is not None else np.zeros_like(brain))
        aug = self.augmentation
        if augment and aug.enabled:
            if rng.random() < aug.flip_probability:
                cond, psr, brain, lesion = (np.flip(a, axis=1) for a in (cond, psr, brain, lesion))
            gain = rng.uniform(*aug.gain_range, size=(2, 1, 1, 1))
            gamma = rng.uniform(*aug.gamma_range, size=(2, 1, 1, 1))
            cond = np.clip(gain * np.power(np.clip(cond, 0, None), gamma), 0, None)
        return cond.astype(np.float32), np.clip(psr, 0, None).astype(np.float32), brain, lesion

    def batch(
        self, step: int, batch_size: int, *, stream: int = 0, augment: bool = True,
        lesion_fraction: float = 0.0,
    ):
        """Patches for one optimisation step.

        Args:
            step: global step (with ``stream``, selects the random draw).
            stream: separates independent draws at the same step (e.g. stages).
            lesion_fraction: probability that a patch is centred on a lesion voxel.

        Returns:
            dict of tensors: ``cond`` B x 2 x P^3, ``psr01`` B x 1 x P^3, ``brain`` B x 1 x P^3,
            ``lesion`` B x 1 x P^3 (lesion voxels inside the brain; zeros for a scan without a mask).
        """
        import torch

        rng = self._rng(step, stream)
        items = [self._one(rng, augment, lesion_fraction) for _ in range(batch_size)]
        return {
            key: torch.from_numpy(np.ascontiguousarray(np.stack([it[i] for it in items])))
            for i, key in enumerate(("cond", "psr01", "brain", "lesion"))
        }

    def fixed_batches(self, count: int, batch_size: int, *, stream: int = 99) -> Iterator[dict]:
        """``count`` un-augmented batches (for latent scale factors)."""
        for i in range(count):
            yield self.batch(i, batch_size, stream=stream, augment=False)
