"""Evaluate every method on one held-out fold, scan by scan.

For each held-out scan: synthesize the whole volume with each trained model
(the participant level's sampler, so the numbers describe what users get),
predict with the linear baseline, and measure every prediction against the
measured PSR inside the brain. Lesion AUCs are computed for each prediction and
for the measured map itself, side by side. Image measures use PSR divided by
the cohort-wide ``psr_scale`` with ``data_range=1``: the paper's normalized
scale, identical for every subject. Nothing here knows about BIDS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from demist_bids.evaluation.linear_baseline import LinearPSRModel
from demist_bids.evaluation.metrics import image_metrics, lesion_auc, nawm_regions
from demist_bids.training.volumes import TrainingVolume

LOGGER = logging.getLogger("demist.evaluation")


@dataclass
class FoldEvaluation:
    """Per-scan rows and pooled ROC scores (NAWM values, lesion values) per method."""

    rows: list[dict] = field(default_factory=list)
    roc_scores: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)
    predictions: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def add_roc(self, method: str, nawm: np.ndarray, lesion: np.ndarray) -> None:
        pos, neg = self.roc_scores.setdefault(method, ([], []))
        pos.append(nawm)
        neg.append(lesion)

    def pooled_roc(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {m: (np.concatenate(p), np.concatenate(n)) for m, (p, n) in self.roc_scores.items() if p}


BOX_MARGIN = 8
"""Voxels kept around the brain's bounding box when synthesizing for evaluation."""


def brain_box(brain: np.ndarray, margin: int = BOX_MARGIN) -> tuple[slice, ...]:
    """Bounding box of the brain plus ``margin`` voxels, clipped to the volume."""
    coords = np.nonzero(brain)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, brain.shape)
    )


def synthesize_in_brain_box(
    synthesize: Callable[[np.ndarray], np.ndarray], cond: np.ndarray, brain: np.ndarray
) -> np.ndarray:
    """Run ``synthesize`` on the brain's bounding box only and paste the result back.

    The preprocessed inputs are zero outside the brain and the measures are
    taken inside it, so the crop changes nothing that is measured while the
    autoencoders (the dominant cost on a CPU) see 2-3x fewer voxels.
    """
    box = brain_box(brain)
    out = np.zeros(brain.shape, dtype=np.float32)
    out[box] = synthesize(np.ascontiguousarray(cond[(slice(None), *box)]))
    return out


def measure_prediction(
    pred_psr: np.ndarray, volume: TrainingVolume, psr_scale: float
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray] | None]:
    """Image measures and lesion AUCs of one PSR map (PSR units) against the measured one.

    Returns:
        The measures, and (NAWM values, lesion values) for ROC curves when the
        scan has lesion and white-matter masks.
    """
    values = image_metrics(pred_psr / psr_scale, volume.psr / psr_scale, volume.brain, data_range=1.0)
    roc = None
    if volume.lesion is not None and volume.wm is not None and volume.lesion.any():
        values.update(lesion_auc(pred_psr, volume.lesion, volume.wm, affine=volume.affine))
        combined = nawm_regions(volume.lesion, volume.wm, affine=volume.affine)["combined"]
        roc = (pred_psr[combined], pred_psr[volume.lesion])
    return values, roc


def evaluate_fold(
    fold: int,
    volumes: Sequence[TrainingVolume],
    synthesizers: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    linear: LinearPSRModel,
    psr_scale: float,
    *,
    keep_predictions: Sequence[str] = (),
) -> FoldEvaluation:
    """Measure every method on the held-out ``volumes`` of one fold.

    Args:
        synthesizers: method name -> function mapping a 2 x X x Y x Z condition
            to a PSR map in PSR units (the trained diffusion models).
        linear: the fold's linear baseline.
        keep_predictions: methods whose predicted maps are kept in the result.
    """
    result = FoldEvaluation()
    for volume in volumes:
        measured, roc = measure_prediction(volume.psr, volume, psr_scale)
        row = {"method": "measured", "fold": fold, "bids_name": volume.name}
        row.update({k: v for k, v in measured.items() if k.startswith("auc_")})
        result.rows.append(row)
        if roc is not None:
            result.add_roc("measured", *roc)
        predictions = {"linear": linear.predict(volume.cond[0], volume.cond[1], volume.brain)}
        for method, synthesize in synthesizers.items():
            pred = synthesize_in_brain_box(synthesize, volume.cond, volume.brain)
            predictions[method] = np.where(volume.brain, pred, 0.0).astype(np.float32)
        for method, pred in predictions.items():
            values, roc = measure_prediction(pred, volume, psr_scale)
            result.rows.append({"method": method, "fold": fold, "bids_name": volume.name, **values})
            if roc is not None:
                result.add_roc(method, *roc)
            if method in keep_predictions:
                result.predictions[(method, volume.name)] = pred
            LOGGER.info("fold %d %s %s: PSNR %.2f dB, AUC %s", fold, volume.name, method,
                        values["psnr"], f"{values.get('auc_combined', float('nan')):.3f}")
    return result
