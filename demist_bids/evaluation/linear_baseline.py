"""The voxel-wise linear baseline: PSR from T1w and FLAIR intensities.

The simple predictor that earlier myelin-mapping work used: an ordinary
least-squares fit ``psr ~ b0 + b1*T1w + b2*FLAIR`` over every brain voxel of
the training subjects, applied voxel by voxel to a held-out subject. It sees
exactly what the diffusion model sees (the preprocessed [0,1] T1w and FLAIR)
and predicts in PSR units, so its numbers sit on the same scale as DEMIST's.
NumPy only: no torch, no BIDS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearPSRModel:
    """Fitted coefficients (intercept, T1w, FLAIR)."""

    intercept: float
    t1w: float
    flair: float

    def predict(self, t1w: np.ndarray, flair: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """PSR map; zero outside ``mask``, clipped at zero (PSR is a non-negative ratio)."""
        pred = self.intercept + self.t1w * t1w + self.flair * flair
        return np.where(mask > 0, np.clip(pred, 0.0, None), 0.0).astype(np.float32)

    def as_dict(self) -> dict[str, float]:
        return {"intercept": self.intercept, "t1w": self.t1w, "flair": self.flair}


def fit_linear_psr(
    volumes: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> LinearPSRModel:
    """Least-squares fit over all brain voxels of the training subjects.

    Args:
        volumes: (t1w, flair, psr, brain_mask) per training scan, all on one grid.

    The normal equations are accumulated subject by subject, so memory stays at
    one volume whatever the cohort size.
    """
    gram = np.zeros((3, 3))
    moment = np.zeros(3)
    n_voxels = 0
    for t1w, flair, psr, mask in volumes:
        inside = mask > 0
        design = np.stack(
            [np.ones(inside.sum()), t1w[inside].astype(float), flair[inside].astype(float)], axis=1
        )
        gram += design.T @ design
        moment += design.T @ psr[inside].astype(float)
        n_voxels += int(inside.sum())
    if n_voxels < 3:
        raise ValueError("the linear baseline needs brain voxels to fit on")
    coef, *_ = np.linalg.lstsq(gram, moment, rcond=None)
    return LinearPSRModel(*(float(c) for c in coef))
