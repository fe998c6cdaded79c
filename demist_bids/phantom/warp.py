"""Per-subject deformation of the canonical head.

A subject's T1w grid is the canonical grid shrunk by ``scale`` (still 1 mm
voxels, so ``scale=0.5`` gives a half-size brain in an eighth of the voxels).
Each subject voxel ``x`` looks up the canonical head at

    c = center + G @ (x / scale - center) + u(x) / scale

where ``G`` is a small random affine (global size, anisotropic scaling, a few
degrees of rotation and shear about the brain centre) and ``u`` a smooth random
displacement field of a few millimetres. Both differ per subject, so every
subject has its own brain shape, size and gyral positions; the map is the same
for all sessions of a subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import smooth_field


@dataclass(frozen=True)
class SubjectWarp:
    """Subject grid -> canonical voxel coordinates (3 x X x Y x Z, float32)."""

    coordinates: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.coordinates.shape[1:])

    def sample(self, volume: np.ndarray, *, cval: float = 0.0) -> np.ndarray:
        """Trilinear resampling of a canonical 1 mm volume onto the subject grid."""
        return ndi.map_coordinates(volume, self.coordinates, order=1, cval=cval).astype(np.float32)

    def sample_coarse(self, volume: np.ndarray, step: int, *, cval: float = 0.0) -> np.ndarray:
        """Resample a canonical volume stored every ``step`` voxels."""
        return ndi.map_coordinates(
            volume, self.coordinates / np.float32(step), order=1, mode="nearest", cval=cval
        ).astype(np.float32)


def random_affine(rng: np.random.Generator) -> np.ndarray:
    """A 3x3 matrix: global size 0.94-1.05, +-4% per axis, +-4 deg rotation, +-0.03 shear."""
    size = rng.uniform(0.94, 1.05)
    stretch = np.diag(size * (1.0 + rng.uniform(-0.04, 0.04, size=3)))
    rotation = Rotation.from_euler("xyz", rng.uniform(-4.0, 4.0, size=3), degrees=True).as_matrix()
    shear = np.eye(3) + np.triu(rng.uniform(-0.03, 0.03, size=(3, 3)), 1)
    # The matrix maps subject offsets to canonical offsets: its inverse is the subject's shape.
    return np.linalg.inv(rotation @ shear @ stretch)


def subject_warp(
    canonical_shape: tuple[int, int, int],
    center: np.ndarray,
    scale: float,
    rng: np.random.Generator,
    *,
    displacement_mm: float = 3.0,
) -> SubjectWarp:
    """Draw one subject's deformation and return its sampling coordinates."""
    shape = tuple(max(8, int(round(n * scale))) for n in canonical_shape)
    matrix = random_affine(rng).astype(np.float32)
    center = center.astype(np.float32)
    amplitude = np.float32(displacement_mm * rng.uniform(0.6, 1.2))
    axes = [np.arange(n, dtype=np.float32) / np.float32(scale) - c for n, c in zip(shape, center)]
    coordinates = np.empty((3, *shape), dtype=np.float32)
    for row in range(3):
        field = smooth_field(shape, rng, max_cycles=3.0, n_terms=8)
        field *= amplitude
        for col, axis in enumerate(axes):
            view = [None, None, None]
            view[col] = slice(None)
            field += matrix[row, col] * axis[tuple(view)]
        coordinates[row] = field + center[row]
    return SubjectWarp(coordinates)
