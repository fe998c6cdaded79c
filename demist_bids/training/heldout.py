"""Evaluate every method on one held-out fold, scan by scan.

For each held-out scan: synthesize the whole volume with each trained model
(the participant level's sampler, so the numbers describe what users get),
predict with the linear baseline, run the reference methods that need more
than the condition (the autoencoder ceiling needs the measured map), and
measure every prediction against the measured PSR inside the brain. Lesion
AUCs, voxel-wise and lesion-level, are computed for each prediction and for
the measured map itself, side by side. Image measures use PSR divided by the
cohort-wide ``psr_scale`` with ``data_range=1``: the paper's normalized
scale, identical for every subject. Nothing here knows about BIDS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from demist_bids.evaluation.linear_baseline import LinearPSRModel
from demist_bids.evaluation.metrics import (LESION_LEVEL_NAMES, image_metrics, lesion_auc, lesion_level_auc_of,
                                            lesion_medians, lesion_regions, nawm_regions)
from demist_bids.training.volumes import TrainingVolume

LOGGER = logging.getLogger("demist.evaluation")


@dataclass
class FoldEvaluation:
    """Per-scan rows, pooled ROC scores (NAWM values, lesion values) and per-lesion medians per method."""

    rows: list[dict] = field(default_factory=list)
    roc_scores: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)
    predictions: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    lesion_scores: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    """Method -> one :func:`~demist_bids.evaluation.metrics.lesion_medians` result per scan with lesions."""

    def add_roc(self, method: str, nawm: np.ndarray, lesion: np.ndarray) -> None:
        pos, neg = self.roc_scores.setdefault(method, ([], []))
        pos.append(nawm)
        neg.append(lesion)

    def pooled_roc(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {m: (np.concatenate(p), np.concatenate(n)) for m, (p, n) in self.roc_scores.items() if p}

    def pooled_lesion_medians(self) -> dict[str, dict[str, np.ndarray]]:
        """Method -> every lesion of the fold's scans (medians of the lesion and its NAWM regions)."""
        return {m: {k: np.concatenate([s[k] for s in scans]) for k in scans[0]}
                for m, scans in self.lesion_scores.items() if scans}


def pool_evaluations(evaluations) -> tuple[list[dict], dict, dict]:
    """Rows, pooled ROC scores and pooled lesion medians of several folds (None entries skipped)."""
    rows, roc, medians = [], {}, {}
    for ev in (e for e in evaluations if e is not None):
        rows += ev.rows
        for method, (pos, neg) in ev.pooled_roc().items():
            old = roc.get(method, (np.empty(0), np.empty(0)))
            roc[method] = (np.r_[old[0], pos], np.r_[old[1], neg])
        for method, values in ev.pooled_lesion_medians().items():
            old = medians.get(method)
            medians[method] = values if old is None else {k: np.r_[old[k], values[k]] for k in values}
    return rows, roc, medians


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


@dataclass
class ScanRegions:
    """A scan's lesion comparisons, computed once and shared by every method's map."""

    voxel: dict[str, np.ndarray] | None = None
    """:func:`~demist_bids.evaluation.metrics.nawm_regions` (None without lesions)."""
    lesions: list[dict[str, np.ndarray]] = field(default_factory=list)
    """:func:`~demist_bids.evaluation.metrics.lesion_regions`, one entry per lesion."""

    @classmethod
    def of(cls, volume: TrainingVolume) -> ScanRegions:
        if volume.lesion is None or volume.wm is None or not volume.lesion.any():
            return cls()
        return cls(nawm_regions(volume.lesion, volume.wm, affine=volume.affine),
                   lesion_regions(volume.lesion, volume.wm, affine=volume.affine))


@dataclass
class Measurement:
    """One map's measures, plus what the pooled ROC curves and lesion-level AUCs are built from."""

    values: dict[str, float]
    roc: tuple[np.ndarray, np.ndarray] | None = None
    """(combined NAWM values, lesion values) when the scan has lesions."""
    lesion_medians: dict[str, np.ndarray] | None = None


def measure_prediction(
    pred_psr: np.ndarray, volume: TrainingVolume, psr_scale: float, regions: ScanRegions | None = None
) -> Measurement:
    """Image measures, voxel-wise and lesion-level AUCs of one PSR map (PSR units) against the measured one.

    The lesion measures need lesion and white-matter masks; the scan has NaN
    lesion-level AUCs where it has masks but no lesion. ``regions`` passes
    :meth:`ScanRegions.of` the volume when several maps are measured.
    """
    values = image_metrics(pred_psr / psr_scale, volume.psr / psr_scale, volume.brain, data_range=1.0)
    regions = ScanRegions.of(volume) if regions is None else regions
    if regions.voxel is None:
        if volume.lesion is not None and volume.wm is not None:
            values.update(dict.fromkeys(LESION_LEVEL_NAMES, float("nan")))
        return Measurement(values)
    values.update(lesion_auc(pred_psr, volume.lesion, volume.wm, regions=regions.voxel))
    medians = lesion_medians(pred_psr, regions.lesions)
    values.update(lesion_level_auc_of(medians))
    values["n_lesions"] = float(len(regions.lesions))
    roc = (pred_psr[regions.voxel["combined"]], pred_psr[volume.lesion])
    return Measurement(values, roc, medians)


ReferenceMethod = Callable[[TrainingVolume], np.ndarray]
"""A method that needs the whole held-out scan, not only its condition (the
autoencoder ceiling encodes the measured map): volume -> PSR map on its grid."""


def evaluate_fold(
    fold: int,
    volumes: Sequence[TrainingVolume],
    synthesizers: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    linear: LinearPSRModel,
    psr_scale: float,
    *,
    references: Mapping[str, ReferenceMethod] | None = None,
    keep_predictions: Sequence[str] = (),
) -> FoldEvaluation:
    """Measure every method on the held-out ``volumes`` of one fold.

    Args:
        synthesizers: method name -> function mapping a 2 x X x Y x Z condition
            to a PSR map in PSR units (trained models, run on the brain's box).
        linear: the fold's linear baseline.
        references: method name -> :data:`ReferenceMethod` (ceilings that see the
            measured map; they are measured like the rest and never count as baselines).
        keep_predictions: methods whose predicted maps are kept in the result.
    """
    result = FoldEvaluation()
    for volume in volumes:
        regions = ScanRegions.of(volume)
        measured = measure_prediction(volume.psr, volume, psr_scale, regions)
        row = {"method": "measured", "fold": fold, "bids_name": volume.name}
        row.update({k: v for k, v in measured.values.items() if "auc_" in k or k == "n_lesions"})
        result.rows.append(row)
        _collect(result, "measured", measured)
        predictions = {"linear": linear.predict(volume.cond[0], volume.cond[1], volume.brain)}
        for method, synthesize in synthesizers.items():
            predictions[method] = synthesize_in_brain_box(synthesize, volume.cond, volume.brain)
        for method, reference in (references or {}).items():
            predictions[method] = reference(volume)
        for method, pred in predictions.items():
            pred = np.where(volume.brain, pred, 0.0).astype(np.float32)
            measurement = measure_prediction(pred, volume, psr_scale, regions)
            values = measurement.values
            result.rows.append({"method": method, "fold": fold, "bids_name": volume.name, **values})
            _collect(result, method, measurement)
            if method in keep_predictions:
                result.predictions[(method, volume.name)] = pred
            LOGGER.info("fold %d %s %s: PSNR %.2f dB, AUC %.3f, lesion-level AUC %.3f", fold, volume.name,
                        method, values["psnr"], values.get("auc_combined", float("nan")),
                        values.get("lesion_auc_combined", float("nan")))
    return result


def _collect(result: FoldEvaluation, method: str, measurement: Measurement) -> None:
    if measurement.roc is not None:
        result.add_roc(method, *measurement.roc)
    if measurement.lesion_medians is not None:
        result.lesion_scores.setdefault(method, []).append(measurement.lesion_medians)
