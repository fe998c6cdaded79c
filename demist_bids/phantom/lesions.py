"""MS white-matter lesions: where they are, how they look, how they evolve.

Each lesion is a soft ellipsoid in the canonical head (so it deforms with the
subject's anatomy) centred on a voxel drawn from one of three zones:
periventricular (half the lesions; larger, ovoid, often confluent),
deep white matter (a third; small, roundish) and juxtacortical (the rest;
small). The number per patient is log-normal (median 15, 3 to 60), so
lesion loads range from a handful of dots to confluent periventricular caps.

A lesion carries its own severity: how much myelin it lost (PSR drop 35-75 %),
how dark it is on T1w (a "black hole" when severe; correlated with, but not
fixed by, the myelin loss) and how bright on FLAIR (independent of myelin
loss, as in real lesions where oedema and gliosis dominate FLAIR). Rendering
gives four canonical maps:

- ``extent``: 1 inside, a sharp logistic edge at the ellipsoid surface (the
  lesion mask is ``extent >= 0.5`` where the tissue is white matter);
- ``t1_loss`` and ``flair_gain``: per-lesion contrast times ``extent``;
- ``psr_loss``: per-lesion myelin loss with a wider, graded rim across the
  lesion border plus a faint perilesional halo in the surrounding
  normal-appearing white matter.

Between sessions lesions grow or shrink by a few percent, some fade, and new
ones appear (Poisson, mean 0.7 per session).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

ZONE_SHARES = {"periventricular": 0.5, "deep": 0.3, "juxtacortical": 0.2}
#: Median radius (canonical mm) and elongation range per zone.
ZONE_SHAPE = {
    "periventricular": (4.5, (1.2, 2.2)),
    "deep": (3.0, (1.0, 1.4)),
    "juxtacortical": (2.6, (1.0, 1.6)),
}
#: Width of the lesion edge, and of the graded PSR rim, in units of the radius.
EDGE_WIDTH = 0.08
RIM_WIDTH = 0.22
#: Perilesional halo: reach in mm and PSR loss relative to the lesion's.
HALO_MM = 3.0
HALO_SHARE = 0.12
MAP_NAMES = ("extent", "t1_loss", "flair_gain", "psr_loss")


@dataclass(frozen=True)
class Lesion:
    """One lesion in canonical voxel coordinates (1 mm)."""

    zone: str
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: tuple[float, float, float]  # Euler angles (degrees)
    psr_loss: float
    t1_loss: float
    flair_gain: float


def draw_count(rng: np.random.Generator) -> int:
    """Lesions per patient: log-normal, median 15, clipped to 3-60."""
    return int(np.clip(round(np.exp(rng.normal(np.log(15.0), 0.7))), 3, 60))


def draw_lesion(rng: np.random.Generator, zones: dict[str, np.ndarray]) -> Lesion:
    """One lesion in a zone chosen by ``ZONE_SHARES``."""
    names = list(ZONE_SHARES)
    zone = names[rng.choice(len(names), p=list(ZONE_SHARES.values()))]
    candidates = zones[zone]
    center = candidates[rng.integers(len(candidates))] + rng.uniform(-1.0, 1.0, size=3)
    median, (lo, hi) = ZONE_SHAPE[zone]
    radius = float(np.clip(median * np.exp(rng.normal(0.0, 0.4)), 1.5, 12.0))
    elongation = rng.uniform(lo, hi)
    radii = (radius * elongation, radius / np.sqrt(elongation), radius / np.sqrt(elongation))
    psr_loss = rng.uniform(0.35, 0.75)
    t1_loss = float(np.clip(0.6 * psr_loss + rng.normal(0.0, 0.08) - 0.1, 0.05, 0.6))
    return Lesion(
        zone=zone,
        center=tuple(float(c) for c in center),
        radii=tuple(float(r) for r in radii),
        rotation=tuple(float(a) for a in rng.uniform(-180.0, 180.0, size=3)),
        psr_loss=float(psr_loss),
        t1_loss=t1_loss,
        flair_gain=float(rng.uniform(0.6, 1.0)),
    )


def draw_lesions(rng: np.random.Generator, zones: dict[str, np.ndarray]) -> list[Lesion]:
    """A patient's lesions at the first session."""
    return [draw_lesion(rng, zones) for _ in range(draw_count(rng))]


def evolve(
    lesions: list[Lesion], rng: np.random.Generator, zones: dict[str, np.ndarray]
) -> list[Lesion]:
    """The same patient one session later: slight growth/shrinkage, few new lesions."""
    evolved = []
    for lesion in lesions:
        factor = float(np.exp(rng.normal(0.02, 0.06)))
        if factor < 0.9 and rng.uniform() < 0.5:
            continue  # resolved
        evolved.append(replace(lesion, radii=tuple(r * factor for r in lesion.radii)))
    evolved.extend(draw_lesion(rng, zones) for _ in range(rng.poisson(0.7)))
    return evolved


def _logistic(x: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(x / width, -50.0, 50.0)))


def size_factor(scale: float) -> float:
    """How much to inflate canonical lesion radii for a head shrunk by ``scale``.

    Shrinking lesions with the head would leave sub-voxel dots at small scales,
    invisible on FLAIR and meaningless as truth; with ``1/sqrt(scale)`` a
    lesion's size in voxels shrinks only with ``sqrt(scale)`` (0.71 at 0.5).
    """
    return float(1.0 / np.sqrt(scale))


def _box(lesion: Lesion, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel bounds (low, high) that hold the lesion, its rim and its halo."""
    reach = max(lesion.radii) * (1.0 + 4 * RIM_WIDTH) + 2 * HALO_MM
    center = np.asarray(lesion.center)
    low = np.clip(np.floor(center - reach).astype(int), 0, shape)
    high = np.clip(np.ceil(center + reach).astype(int) + 1, 0, shape)
    return low, high


def render(
    lesions: list[Lesion], shape: tuple[int, int, int], *, inflate: float = 1.0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rasterize lesions on the canonical grid, cropped to where they are.

    Returns the maps (``MAP_NAMES``, one shape) and the canonical voxel at
    their origin; overlapping lesions take the maximum. Without lesions the
    maps are a single zero voxel. ``inflate`` multiplies every radius (see
    :func:`size_factor`).
    """
    lesions = [
        replace(lesion, radii=tuple(r * inflate for r in lesion.radii)) for lesion in lesions
    ]
    boxes = [_box(lesion, shape) for lesion in lesions]
    boxes = [(lo, hi) for lo, hi in boxes if np.all(hi > lo)]
    if not boxes:
        return {name: np.zeros((1, 1, 1), np.float32) for name in MAP_NAMES}, np.zeros(3, int)
    origin = np.min([lo for lo, _ in boxes], axis=0)
    size = np.max([hi for _, hi in boxes], axis=0) - origin
    maps = {name: np.zeros(tuple(size), dtype=np.float32) for name in MAP_NAMES}
    for lesion, (low, high) in zip(lesions, boxes):
        radii = np.asarray(lesion.radii, dtype=np.float32)
        axes = [
            np.arange(lo, hi, dtype=np.float32) - c for lo, hi, c in zip(low, high, lesion.center)
        ]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        rotation = Rotation.from_euler("xyz", lesion.rotation, degrees=True).as_matrix()
        local = grid @ rotation.astype(np.float32)  # coordinates in the lesion's axes
        r = np.sqrt(np.sum((local / radii) ** 2, axis=-1)) - 1.0
        extent = _logistic(r, EDGE_WIDTH)
        outside_mm = np.maximum(r, 0.0) * float(radii.mean())
        psr = lesion.psr_loss * (
            _logistic(r, RIM_WIDTH) + HALO_SHARE * np.exp(-((outside_mm / HALO_MM) ** 2))
        )
        box = tuple(slice(lo - o, hi - o) for lo, hi, o in zip(low, high, origin))
        for name, values in (
            ("extent", extent),
            ("t1_loss", lesion.t1_loss * extent),
            ("flair_gain", lesion.flair_gain * extent),
            ("psr_loss", np.minimum(psr, lesion.psr_loss)),
        ):
            np.maximum(maps[name][box], values, out=maps[name][box])
    return maps, origin
