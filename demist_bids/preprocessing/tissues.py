"""Three-class tissue segmentation (GM=1, WM=2, CSF=3) of a bias-corrected T1w inside the brain.

A Gaussian mixture on T1w intensity: on a T1w the three classes are ordered
CSF < GM < WM, and unlike k-means a mixture allows classes of different width
and size (CSF is broad and small, WM narrow and large), which is what a
partial-volume-blurred brain looks like. FLAIR is not used: lesions are bright
on it and would pull a class. Means start at the 10th/50th/90th percentiles so
labels are ordered and deterministic.

Label values follow the BIDS common derivatives order that sMRIPrep and
fMRIPrep write (1 GM, 2 WM, 3 CSF), so a demist ``dseg`` reads like theirs;
:data:`LABELS` is the one table the ``dseg.tsv`` lookup file and every reader
take them from.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

GM, WM, CSF = 1, 2, 3
LABELS: tuple[tuple[int, str, str], ...] = (
    (GM, "Gray Matter", "GM"),
    (WM, "White Matter", "WM"),
    (CSF, "Cerebrospinal Fluid", "CSF"),
)
"""(index, name, abbreviation) of each label, the rows of ``dseg.tsv``."""
LABEL_ORDER = "1 GM, 2 WM, 3 CSF"
MAX_FIT_SAMPLES = 50_000
"""Voxels used to fit the mixture (sampled evenly); every brain voxel is then labelled."""


def segment_tissues(
    t1w: nib.spatialimages.SpatialImage,
    brain_mask: nib.spatialimages.SpatialImage,
    *,
    seed: int = 0,
) -> nib.Nifti1Image:
    """Label the brain voxels of ``t1w`` as GM (1), WM (2) or CSF (3); 0 outside the mask.

    Args:
        t1w: bias-corrected T1w.
        brain_mask: brain mask on the same grid.
        seed: random state of the mixture fit.

    Returns:
        uint8 label image on ``t1w``'s grid.
    """
    from sklearn.mixture import GaussianMixture

    data = np.asanyarray(t1w.dataobj, dtype=np.float32)
    mask = np.asanyarray(brain_mask.dataobj) > 0
    values = data[mask]
    labels = np.zeros(data.shape, dtype=np.uint8)
    if values.size < 30:
        return nib.Nifti1Image(labels, t1w.affine)
    scale = float(np.percentile(values, 99)) or 1.0
    values = np.clip(values / scale, 0, 1.5).reshape(-1, 1)
    step = max(1, values.shape[0] // MAX_FIT_SAMPLES)
    means = np.percentile(values, [10, 50, 90]).reshape(-1, 1)
    gmm = GaussianMixture(3, means_init=means, random_state=seed, max_iter=100, tol=1e-3)
    gmm.fit(values[::step])
    order = np.argsort(gmm.means_.ravel())  # component index sorted by mean: CSF, GM, WM
    rank = np.empty(3, dtype=np.uint8)
    rank[order] = [CSF, GM, WM]
    labels[mask] = rank[gmm.predict(values)]
    out = nib.Nifti1Image(labels, t1w.affine)
    out.set_data_dtype(np.uint8)
    return out
