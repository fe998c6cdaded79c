"""One subject's anatomy on its T1w grid: tissues, lesions and a head shell.

The canonical brain maps are resampled through the subject's warp. Around the
brain we add a layered head built from the distance outside the brain (mm in
canonical units, so it shrinks with ``scale``): a CSF rim, the inner table of
the skull, fatty diploe, the outer table and the scalp, each boundary soft
(partial volume) and each thickness modulated by a smooth random field so the
shell is not a uniform dilation. Skull-stripping therefore has to remove a
bright scalp and diploe separated from the brain by dark bone and CSF, as in a
real MPRAGE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import smooth_field
from .lesions import Lesion, render, size_factor
from .template import COARSE_MM, CanonicalHead
from .warp import SubjectWarp

#: Head layers outside the brain: name -> (inner, outer) distance in canonical mm.
HEAD_LAYERS = {
    "csf_rim": (0.0, 2.5),
    "inner_table": (2.5, 4.0),
    "diploe": (4.0, 6.5),
    "outer_table": (6.5, 8.0),
    "scalp": (8.0, 14.0),
}
#: A voxel is lesion in the truth mask when at least this fraction of it is lesioned WM.
LESION_FRACTION = 0.5


@dataclass(frozen=True)
class SubjectAnatomy:
    """Fractions and lesion maps on the subject's T1w grid (float32 arrays).

    ``tissue`` has ``gm``, ``wm``, ``csf`` and the ``HEAD_LAYERS``; ``lesion``
    has the rendered lesion maps (``extent``, ``t1_loss``, ``flair_gain``,
    ``psr_loss``), all zero for a control.
    """

    tissue: dict[str, np.ndarray]
    texture: np.ndarray
    lesion: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.texture.shape

    @property
    def brain_mask(self) -> np.ndarray:
        """Voxels at least half brain (GM + WM + CSF inside the pial surface)."""
        return (self.tissue["gm"] + self.tissue["wm"] + self.tissue["csf"]) >= 0.5

    @property
    def lesion_mask(self) -> np.ndarray:
        """Voxels at least half lesioned white matter: the truth segmentations are scored on."""
        return self.lesion["extent"] * self.tissue["wm"] >= LESION_FRACTION

    def dseg(self) -> np.ndarray:
        """Hard labels in the brain mask: 1 CSF, 2 GM, 3 WM (lesions count as WM)."""
        stacked = np.stack([self.tissue["csf"], self.tissue["gm"], self.tissue["wm"]])
        labels = (np.argmax(stacked, axis=0) + 1).astype(np.uint8)
        labels[~self.brain_mask] = 0
        return labels


def _soft_step(x: np.ndarray, width: float = 0.4) -> np.ndarray:
    """0 below, 1 above zero, with a logistic edge ``width`` mm wide."""
    return 1.0 / (1.0 + np.exp(-np.clip(x / width, -50.0, 50.0)))


def head_layers(
    distance: np.ndarray, brain: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Fractions of the head layers given distance outside the brain (mm)."""
    thickness = 1.0 + 0.15 * smooth_field(distance.shape, rng, max_cycles=2.0, n_terms=6)
    depth = distance / thickness
    outside = np.clip(1.0 - brain, 0.0, 1.0)
    layers = {}
    for name, (inner, outer) in HEAD_LAYERS.items():
        start = 1.0 if inner == 0.0 else _soft_step(depth - inner)
        layers[name] = (outside * (start - _soft_step(depth - outer))).astype(np.float32)
    return layers


def subject_anatomy(
    head: CanonicalHead,
    warp: SubjectWarp,
    lesions: list[Lesion],
    rng: np.random.Generator,
    *,
    scale: float,
) -> SubjectAnatomy:
    """Resample the canonical head and the subject's lesions onto its grid."""
    box = head.brain_box
    maps = warp.sample(
        {name: getattr(head, name)[box] for name in ("gm", "wm", "csf", "texture")},
        origin=[b.start for b in box],
    )
    texture = maps.pop("texture")
    tissue = maps
    brain = tissue["gm"] + tissue["wm"] + tissue["csf"]
    distance = warp.sample_coarse(head.distance_outside, COARSE_MM)
    tissue.update(head_layers(distance, brain, rng))
    canonical, origin = render(lesions, head.shape, inflate=size_factor(scale))
    lesion = warp.sample(canonical, origin, sparse=True)
    return SubjectAnatomy(tissue=tissue, texture=texture, lesion=lesion)
