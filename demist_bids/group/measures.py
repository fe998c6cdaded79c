"""Per subject/session measures of a synthesized PSR map, for the group table.

PSR statistics per tissue (median and IQR: robust to the few voxels that
partial volume or a bad registration throws far off), lesion/NAWM contrast,
uncertainty, the sidecar's provenance and preprocessing QC, and, where a
measured map exists, agreement with it through :mod:`demist_bids.evaluation.metrics`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demist_bids.group.collect import ParticipantRun

LOGGER = logging.getLogger("demist.group")

PSR_DATA_RANGE = 0.3
"""Fixed PSR range for PSNR/SSIM: the same for every subject so values compare across the cohort.

Measured 3T PSR reaches about 0.25 at the brain's 90th percentile and white
matter lies around 0.15-0.20; 0.3 covers brain tissue with headroom.
"""

def _default_labels() -> dict[str, int]:
    from demist_bids.preprocessing.tissues import LABELS

    return {abbreviation.lower(): index for index, _, abbreviation in LABELS}


TISSUE_LABELS = _default_labels()
"""Default ``dseg`` labels: the BIDS common order (1 GM, 2 WM, 3 CSF) of demist and sMRIPrep."""

THUMBNAIL_RANGE = (0.0, PSR_DATA_RANGE)


@dataclass
class RunSources:
    """Optional inputs found for one run outside its own outputs."""

    lesion_mask: Path | None = None
    tissue: Path | None = None
    """A ``dseg`` from ``-d`` derivatives, used instead of the participant level's."""
    measured: Path | None = None
    """A measured ``PSRmap`` on the native T1w grid."""


def _load_on_grid(path: Path, reference, *, labels: bool) -> np.ndarray:
    """Voxel data of ``path`` on ``reference``'s grid (resampled only when the grids differ)."""
    import nibabel as nib

    img = nib.load(path)
    same_grid = img.shape[:3] == reference.shape[:3] and np.allclose(
        img.affine, reference.affine, atol=1e-3
    )
    if not same_grid:
        from nilearn.image import resample_to_img

        LOGGER.warning("%s is not on the PSR map's grid: resampling it", path.name)
        img = resample_to_img(
            img,
            reference,
            interpolation="nearest" if labels else "linear",
            force_resample=True,
            copy_header=True,
        )
    data = np.asarray(img.dataobj)
    return data.reshape(data.shape[:3]) if data.ndim > 3 and data.shape[3] == 1 else data


_TISSUE_WORDS = {
    "csf": {"csf", "cerebrospinal"},
    "gm": {"gm", "grey", "gray"},
    "wm": {"wm", "white"},
}


def _dataset_table(dseg: Path) -> Path | None:
    """``dseg.tsv`` in the folders above ``dseg`` up to its dataset's root (BIDS inheritance)."""
    for folder in dseg.parents:
        if (folder / "dseg.tsv").exists():
            return folder / "dseg.tsv"
        if (folder / "dataset_description.json").exists():
            break
    return None


def _table_rows(path: Path) -> list[tuple[str, str]]:
    import pandas as pd

    table = pd.read_csv(path, sep="\t", dtype=str).fillna("")
    return [(row.get("index", ""), f"{row.get('name', '')} {row.get('abbreviation', '')}")
            for _, row in table.iterrows()]


def _sidecar_rows(dseg: Path) -> list[tuple[str, str]]:
    """The ``"Labels": {"1": "CSF", ...}`` of the dseg's own sidecar (empty when none)."""
    try:
        meta = json.loads(dseg.with_name(dseg.name.split(".nii")[0] + ".json").read_text())
        return [(str(k), str(v)) for k, v in (meta.get("Labels") or {}).items()]
    except (OSError, json.JSONDecodeError, AttributeError):
        return []


def _match_tissues(rows: list[tuple[str, str]]) -> dict[str, int]:
    """Tissue -> label from (index, text) rows whose text holds one of the tissue's words."""
    labels: dict[str, int] = {}
    for index, text in rows:
        words = set(str(text).lower().split())
        for tissue, keys in _TISSUE_WORDS.items():
            if words & keys and str(index).strip().isdigit():
                labels.setdefault(tissue, int(index))
    return labels


def tissue_labels(dseg: Path) -> dict[str, int]:
    """CSF/GM/WM label values of a ``dseg``.

    The first of these that names a tissue wins: the sibling lookup table
    ``<name>.tsv``; the file's own sidecar ``Labels`` (demist wrote 1 CSF, 2 GM,
    3 WM there before it followed the BIDS order, and said so); the dataset's
    ``dseg.tsv`` (a row counts for a tissue when its ``name`` or
    ``abbreviation`` holds one of that tissue's words, ``white matter``,
    ``WM``...). Otherwise the BIDS common order (1 GM, 2 WM, 3 CSF) that
    demist, sMRIPrep and fMRIPrep write.
    """
    dseg = Path(dseg)
    sibling = dseg.with_name(dseg.name.split(".nii")[0] + ".tsv")
    sources = (
        lambda: _table_rows(sibling) if sibling.exists() else [],
        lambda: _sidecar_rows(dseg),
        lambda: _table_rows(root) if (root := _dataset_table(dseg)) else [],
    )
    for rows in sources:
        labels = _match_tissues(rows())
        if labels:
            return {**TISSUE_LABELS, **labels}
    return dict(TISSUE_LABELS)


def _robust_summary(values: np.ndarray, name: str) -> dict[str, float]:
    if values.size == 0:
        return {f"psr_median_{name}": math.nan, f"psr_iqr_{name}": math.nan}
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {f"psr_median_{name}": float(q50), f"psr_iqr_{name}": float(q75 - q25)}


def _thumbnail(psr_img, brain: np.ndarray) -> np.ndarray:
    """Axial PSR slice through the brain's centre, anterior up, for the report's subject strips."""
    import nibabel as nib

    canonical = nib.as_closest_canonical(psr_img)
    mask_img = nib.Nifti1Image(brain.astype(np.uint8), psr_img.affine)
    mask = np.asarray(nib.as_closest_canonical(mask_img).dataobj) > 0
    data = np.asarray(canonical.dataobj, dtype=np.float32).reshape(mask.shape)
    z = int(round(np.nonzero(mask)[2].mean())) if mask.any() else mask.shape[2] // 2
    return np.rot90(np.where(mask[:, :, z], data[:, :, z], np.nan))


def image_measures(
    run: ParticipantRun, sources: RunSources, *, data_range: float = PSR_DATA_RANGE
) -> tuple[dict[str, Any], np.ndarray]:
    """PSR statistics (and agreement) for one run, plus a thumbnail slice.

    Regions: brain (the participant brain mask, else finite non-zero PSR), WM
    and GM (``dseg`` labels inside the brain), lesions (the given
    mask) and NAWM (WM minus lesions).
    """
    import nibabel as nib

    from demist_bids.evaluation.metrics import bland_altman, image_metrics, lesion_auc, nawm_regions

    psr_img = nib.load(run.psr)
    psr = np.asarray(psr_img.dataobj, dtype=np.float64).reshape(psr_img.shape[:3])
    finite = np.isfinite(psr)
    if run.brain_mask is not None:
        brain = (_load_on_grid(run.brain_mask, psr_img, labels=True) > 0) & finite
    else:
        brain = finite & (psr != 0)
    measures: dict[str, Any] = {"brain_volume_ml": float(brain.sum() * _voxel_ml(psr_img))}
    measures.update(_robust_summary(psr[brain], "brain"))

    dseg_path = sources.tissue or run.dseg
    wm = np.zeros_like(brain)
    measures["tissue_source"] = "n/a" if dseg_path is None else str(dseg_path.name)
    if dseg_path is not None:
        dseg = _load_on_grid(dseg_path, psr_img, labels=True)
        labels = tissue_labels(dseg_path)
        wm = brain & (dseg == labels["wm"])
        measures.update(_robust_summary(psr[wm], "wm"))
        measures.update(_robust_summary(psr[brain & (dseg == labels["gm"])], "gm"))

    lesion = regions = None
    if sources.lesion_mask is not None:
        lesion = (_load_on_grid(sources.lesion_mask, psr_img, labels=True) > 0) & finite
        measures["lesion_mask"] = sources.lesion_mask.name
        measures["lesion_volume_ml"] = float(lesion.sum() * _voxel_ml(psr_img))
        measures.update(_robust_summary(psr[lesion], "lesion"))
        measures.update(_robust_summary(psr[wm & ~lesion], "nawm"))
        regions = nawm_regions(lesion, wm, affine=psr_img.affine)
        auc = lesion_auc(np.nan_to_num(psr), lesion, wm, regions=regions)
        measures.update({f"lesion_{key}": value for key, value in auc.items()})

    if run.std is not None:
        std = _load_on_grid(run.std, psr_img, labels=False).astype(np.float64)
        measures["uncertainty_mean"] = float(np.nanmean(std[brain])) if brain.any() else math.nan

    if sources.measured is not None:
        measured = _load_on_grid(sources.measured, psr_img, labels=False).astype(np.float64)
        both = brain & np.isfinite(measured)
        measures["measured_map"] = sources.measured.name
        measures["agreement_data_range"] = data_range
        measures.update(_robust_summary(measured[both], "brain_measured"))
        measures.update(_robust_summary(measured[wm & both], "wm_measured"))
        if both.any():
            measures.update(
                {
                    f"agree_{k}": v
                    for k, v in image_metrics(psr, measured, both, data_range=data_range).items()
                }
            )
        ba = bland_altman(psr, measured, wm & both)
        measures.update({f"ba_wm_{k}": v for k, v in ba.items() if k != "n"})
        if lesion is not None:
            auc = lesion_auc(np.nan_to_num(measured), lesion, wm, regions=regions)
            measures.update({f"lesion_{key}_measured": value for key, value in auc.items()})
    return measures, _thumbnail(psr_img, brain)


def _voxel_ml(img) -> float:
    return float(np.prod(img.header.get_zooms()[:3])) / 1000.0


def sidecar_measures(sidecar: Path | None) -> dict[str, Any]:
    """Provenance and preprocessing QC from the PSR map's JSON sidecar, flattened to columns."""
    if sidecar is None:
        return {}
    try:
        meta = json.loads(Path(sidecar).read_text())
    except (OSError, json.JSONDecodeError) as err:
        LOGGER.warning("cannot read %s: %s", sidecar, err)
        return {}
    model = meta.get("Model") or {}
    sampler = meta.get("Sampler") or {}
    columns: dict[str, Any] = {
        "runtime_s": meta.get("RuntimeSeconds"),
        "software_version": meta.get("SoftwareVersion"),
        "model_name": model.get("Name"),
        "model_sha256": model.get("SHA256"),
        "model_is_demo": model.get("IsDemo"),
    }
    columns.update({f"sampler_{key.lower()}": value for key, value in sampler.items()})
    columns.update({f"qc_{key}": _cell(value) for key, value in (meta.get("QC") or {}).items()})
    return {key: _cell(value) for key, value in columns.items() if value is not None}


def _cell(value: Any) -> Any:
    """A TSV-friendly scalar: lists joined with ';', mappings as compact JSON."""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value
