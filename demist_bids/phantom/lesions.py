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
        flair_gain=float(rng.uniform(0.55, 1.0)),
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


def render(lesions: list[Lesion], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Rasterize lesions on the canonical grid; overlapping lesions take the maximum."""
    maps = {name: np.zeros(shape, dtype=np.float32) for name in MAP_NAMES}
    for lesion in lesions:
        radii = np.asarray(lesion.radii)
        reach = radii.max() * (1.0 + 4 * RIM_WIDTH) + HALO_MM * 2
        center = np.asarray(lesion.center)
        low = np.maximum(np.floor(center - reach).astype(int), 0)
        high = np.minimum(np.ceil(center + reach).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
        grid = np.stack(
            np.meshgrid(*[np.arange(lo, hi) for lo, hi in zip(low, high)], indexing="ij"), -1
        ).astype(np.float32) - center.astype(np.float32)
        rotation = Rotation.from_euler("xyz", lesion.rotation, degrees=True).as_matrix()
        local = grid @ rotation.astype(np.float32)  # coordinates in the lesion's axes
        r = np.sqrt(np.sum((local / radii.astype(np.float32)) ** 2, axis=-1)) - 1.0
        extent = _logistic(r, EDGE_WIDTH)
        outside_mm = np.maximum(r, 0.0) * float(radii.mean())
        psr = lesion.psr_loss * (
            _logistic(r, RIM_WIDTH) + HALO_SHARE * np.exp(-((outside_mm / HALO_MM) ** 2))
        )
        for name, values in (
            ("extent", extent),
            ("t1_loss", lesion.t1_loss * extent),
            ("flair_gain", lesion.flair_gain * extent),
            ("psr_loss", np.minimum(psr, lesion.psr_loss)),
        ):
            np.maximum(maps[name][box], values, out=maps[name][box])
    return maps
