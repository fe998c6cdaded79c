"""Acquire the T1w and FLAIR images: geometry, head motion, bias, noise.

T1w: 3D MPRAGE at 1 mm on the subject grid, RAS orientation; a smooth
multiplicative receive bias (exp of a smooth field, about +-15 %), Rician
noise (sigma 2-3 % of white matter), stored as int16 like a scanner would.

FLAIR: a 2D axial acquisition in another orientation (LPS axis codes), 1 mm
in-plane, thick slices (``slice_thickness(scale)``: 3 mm at scale 1), a
different field of view (square in-plane, covering the brain but cutting the
neck and part of the scalp), and acquired after the head moved: a rigid motion
of 2-5 degrees and 2-6 mm about the brain centre. Each slice integrates the
signal over its thickness (sub-slice sampling). Own bias field and Rician noise.

The true alignment is written as ``flair_to_t1w``, a 4x4 world-to-world matrix
in RAS+ millimetres: for the world coordinates ``q`` (from the FLAIR image's
affine) of any point in the FLAIR image, ``M @ [q, 1]`` are the world
coordinates in the T1w image of the same anatomical point. Equivalently
``M @ flair.affine`` is an affine that places the FLAIR voxels onto the T1w
anatomy (so resampling the FLAIR with that affine onto the T1w grid aligns it).
This is the inverse of the head motion between the two scans, and it is NOT
the ITK/ANTs convention (LPS, mapping fixed-image points to moving-image points):
for ITK with the T1w as fixed image, use ``inv(M)`` conjugated by diag(-1,-1,1,1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from .fields import add_rician_noise, bias_field

INT16_MAX = 32767


@dataclass(frozen=True)
class Acquired:
    """An acquired image: int16 data, its voxel-to-world affine and its geometry."""

    data: np.ndarray
    affine: np.ndarray
    slice_thickness: float


@dataclass(frozen=True)
class HeadMotion:
    """Rigid head motion between the T1w and the FLAIR scan (about ``center``)."""

    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    center: tuple[float, float, float]

    def flair_to_t1w(self) -> np.ndarray:
        """The 4x4 world-to-world matrix FLAIR -> T1w (see the module docstring)."""
        rotation = Rotation.from_euler("xyz", self.rotation_deg, degrees=True).as_matrix()
        center = np.asarray(self.center)
        # Anatomy at T1w-world p is at FLAIR-world q = R (p - c) + c + t; invert it.
        matrix = np.eye(4)
        matrix[:3, :3] = rotation.T
        matrix[:3, 3] = center - rotation.T @ (center + np.asarray(self.translation_mm))
        return matrix


def slice_thickness(scale: float) -> float:
    """FLAIR slice thickness: 3 mm for a full-size head, thinner for a shrunken one.

    Never below 1.5 mm, so the FLAIR stays anisotropic at every scale.
    """
    return float(max(1.5, round(6.0 * scale) / 2.0))


def draw_motion(rng: np.random.Generator, center: np.ndarray) -> HeadMotion:
    """2-5 degrees of rotation and 2-6 mm of translation, in random directions."""
    axis = rng.normal(size=3)
    angles = axis / np.linalg.norm(axis) * rng.uniform(2.0, 5.0)
    shift = rng.normal(size=3)
    shift = shift / np.linalg.norm(shift) * rng.uniform(2.0, 6.0)
    return HeadMotion(
        rotation_deg=tuple(float(a) for a in angles),
        translation_mm=tuple(float(s) for s in shift),
        center=tuple(float(c) for c in center),
    )


def _digitize(signal: np.ndarray, rng: np.random.Generator, *, noise: float, bias: float):
    """Bias, Rician noise (``noise`` x white-matter signal of 1) and int16 scanner units."""
    image = signal * bias_field(signal.shape, rng, strength=bias)
    image = add_rician_noise(image, noise, rng)
    gain = rng.uniform(700.0, 1100.0)
    return np.clip(np.rint(image * gain), 0, INT16_MAX).astype(np.int16)


def acquire_t1w(signal: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> Acquired:
    """The T1w image on its own grid (WM signal about 1 in ``signal``)."""
    data = _digitize(signal, rng, noise=rng.uniform(0.02, 0.03), bias=0.15)
    return Acquired(data, affine, 1.0)


def flair_affine(t1w_shape, center: np.ndarray, thickness: float, rng: np.random.Generator):
    """An LPS axial grid: square 1 mm in-plane, ``thickness`` slices, another field of view."""
    extent = np.asarray(t1w_shape, dtype=float)  # T1w voxels are 1 mm
    in_plane = int(round(0.95 * max(extent[0], extent[1])))
    n_slices = int(np.ceil(0.8 * extent[2] / thickness))
    fov_center = center + np.array([0.0, 0.0, 0.05 * extent[2]]) + rng.uniform(-3, 3, size=3)
    affine = np.diag([-1.0, -1.0, thickness, 1.0])
    half = np.array([in_plane - 1, in_plane - 1, n_slices - 1]) / 2.0
    affine[:3, 3] = fov_center - affine[:3, :3] @ half
    return (in_plane, in_plane, n_slices), affine


def acquire_flair(
    signal: np.ndarray,
    t1w_affine: np.ndarray,
    motion: HeadMotion,
    scale: float,
    rng: np.random.Generator,
) -> Acquired:
    """Sample the anatomy-space FLAIR signal through motion onto the FLAIR grid."""
    thickness = slice_thickness(scale)
    shape, affine = flair_affine(signal.shape, np.asarray(motion.center), thickness, rng)
    to_t1w_voxel = np.linalg.inv(t1w_affine) @ motion.flair_to_t1w() @ affine
    n_sub = max(1, int(round(thickness)))
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    image = np.zeros(int(np.prod(shape)), dtype=np.float32)
    for offset in (np.arange(n_sub) + 0.5) / n_sub - 0.5:  # integrate over the slice
        shifted = index.copy()
        shifted[2] += np.float32(offset)
        coordinates = to_t1w_voxel[:3, :3].astype(np.float32) @ shifted
        coordinates += to_t1w_voxel[:3, 3:4].astype(np.float32)
        image += ndi.map_coordinates(signal, coordinates, order=1, cval=0.0)
    image = (image / n_sub).reshape(shape)
    data = _digitize(image, rng, noise=rng.uniform(0.015, 0.025), bias=0.2)
    return Acquired(data, affine, thickness)
