"""Per-subject deformation of the canonical head.

A subject's T1w grid is the canonical grid shrunk by ``scale`` (still 1 mm
voxels, so ``scale=0.5`` gives a half-size brain in an eighth of the voxels).
Each subject voxel ``x`` looks up the canonical head at

    c = center + G @ (x / scale - center) + u(x)

where ``G`` is a small random affine (global size, anisotropic scaling, a few
degrees of rotation and shear about the brain centre) and ``u`` a smooth random
displacement field of a few (canonical) millimetres. Both differ per subject, so every
subject has its own brain shape, size and gyral positions; the map is the same
for all sessions of a subject.

Atrophy then enlarges the ventricles: lookups near the ventricles' centre
``v`` are pulled towards it,

    c <- c - a * exp(-|c - v|^2 / (2 * (20 mm)^2)) * (c - v),

so the central structures grow by up to ``1 / (1 - a)`` while the map stays
one-to-one for ``a < 1`` (``a`` is 0-0.04 for ageing, plus 0.04-0.15 in MS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import smooth_field

#: Reach (canonical mm) of the ventricular enlargement that models atrophy.
ATROPHY_RADIUS_MM = 20.0


@dataclass(frozen=True)
class SubjectWarp:
    """Subject grid -> canonical voxel coordinates (3 x X x Y x Z, float32)."""

    coordinates: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.coordinates.shape[1:])

    def sample(
        self, volumes: dict[str, np.ndarray], origin=(0, 0, 0), *, sparse: bool = False
    ) -> dict[str, np.ndarray]:
        """Trilinear resampling of canonical 1 mm volumes (zero outside) onto the subject grid.

        ``volumes`` share one shape and may be a crop of the canonical grid
        starting at voxel ``origin``. Only subject voxels that land inside the
        crop are interpolated: brain maps fill half the head, so cropping saves
        much of the work at full scale. With ``sparse`` (lesion maps: a few
        blobs in a large box), voxels are first screened with a nearest-
        neighbour lookup of where any volume is non-zero.
        """
        shape = np.asarray(next(iter(volumes.values())).shape)
        origin = np.asarray(origin, dtype=np.float32)
        inside = np.ones(self.shape, dtype=bool)
        for axis in range(3):
            inside &= self.coordinates[axis] > origin[axis] - 1
            inside &= self.coordinates[axis] < origin[axis] + shape[axis]
        where = np.flatnonzero(inside)
        points = self.coordinates.reshape(3, -1)[:, where] - origin[:, None]
        if sparse:
            support = ndi.binary_dilation(np.any([v != 0 for v in volumes.values()], axis=0))
            keep = ndi.map_coordinates(support.astype(np.uint8), points, order=0) > 0
            where, points = where[keep], points[:, keep]
        sampled = {}
        for name, volume in volumes.items():
            out = np.zeros(self.shape, dtype=np.float32)
            out.reshape(-1)[where] = ndi.map_coordinates(volume, points, order=1, cval=0.0)
            sampled[name] = out
        return sampled

    def sample_coarse(self, volume: np.ndarray, step: int) -> np.ndarray:
        """Resample a canonical volume stored every ``step`` voxels (edge values outside)."""
        return ndi.map_coordinates(
            volume, self.coordinates / np.float32(step), order=1, mode="nearest"
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
    atrophy: float = 0.0,
    atrophy_center: np.ndarray | None = None,
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
    if atrophy > 0.0 and atrophy_center is not None:
        offset = coordinates - atrophy_center.astype(np.float32)[:, None, None, None]
        pull = np.exp(-np.sum(offset**2, axis=0) / np.float32(2 * ATROPHY_RADIUS_MM**2))
        coordinates -= np.float32(atrophy) * pull * offset
    return SubjectWarp(coordinates)
