"""PSR in lesions against normal-appearing white matter, for the subject report."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def lesion_summary(psr: Path, dseg: Path, lesion_mask: Path | None) -> dict:
    """Median PSR per region and lesion-vs-NAWM ROC AUCs; empty when no lesion mask is given."""
    import nibabel as nb

    from demist_bids.evaluation.metrics import lesion_auc, nawm_regions
    from demist_bids.preprocessing.tissues import WM

    if lesion_mask is None:
        return {}
    psr_img = nb.load(psr)
    values = np.asanyarray(psr_img.dataobj, dtype=np.float32)
    lesion = np.asanyarray(nb.load(lesion_mask).dataobj) > 0
    if lesion.shape != values.shape:
        return {"error": f"lesion mask grid {lesion.shape} differs from the T1w grid {values.shape}"}
    wm = np.asanyarray(nb.load(dseg).dataobj) == WM
    regions = nawm_regions(lesion, wm, affine=psr_img.affine)
    summary = {
        "lesion_voxels": int(lesion.sum()),
        "psr_median_lesion": float(np.median(values[lesion])) if lesion.any() else None,
    }
    for name, region in regions.items():
        summary[f"psr_median_nawm_{name}"] = float(np.median(values[region])) if region.any() else None
    summary.update({k: float(v) for k, v in lesion_auc(values, lesion, wm, affine=psr_img.affine).items()})
    return summary
