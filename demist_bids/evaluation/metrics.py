"""Image-agreement and lesion-contrast measures for synthesized PSR maps.

The measures the DEMIST paper reports (PSNR, SSIM, MSE, plus L1 and NCC, all
inside the brain; ROC AUC of PSR for lesions against normal-appearing white
matter), Bland-Altman agreement, and the robust z-score the group level uses to
flag outliers. Pure numpy/scipy/scikit-image/scikit-learn so that the ``train``
evaluation and the group report compute identical numbers.

Array conventions: 3D arrays on one grid; masks are anything whose non-zero
voxels are "in". Where left and right matter (:func:`nawm_regions`) the arrays
are assumed RAS-like, with array axis 0 running left-right, unless an affine is
given, in which case the axis closest to world x is used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

LOGGER = logging.getLogger("demist.evaluation")

SSIM_SIGMA = 1.5
"""Gaussian SSIM window (Wang et al. 2004; MONAI SSIMMetric's default): sigma 1.5 voxels, 11^3."""
_SSIM_RADIUS = 5  # skimage: int(3.5 * 1.5 + 0.5) with its default truncate of 3.5

REGION_NAMES = ("proximal", "distal", "combined")
"""The normal-appearing white-matter regions :func:`nawm_regions` returns."""


def _as_mask(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) != 0


def _check_same_shape(*arrays: np.ndarray) -> None:
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"arrays must share one grid, got shapes {sorted(shapes)}")


def image_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, *, data_range: float
) -> dict[str, float]:
    """PSNR, SSIM, MSE, L1 and NCC of ``pred`` against ``target`` inside ``mask``.

    Why each choice:

    - ``data_range`` is given by the caller (never taken from the images), so
      PSNR and SSIM mean the same thing for every subject: pass the cohort-wide
      PSR scale (for example the model's target scale), not a per-subject range.
    - ``psnr`` = 10 log10(data_range^2 / mse) in dB; ``inf`` when identical.
    - ``ssim`` is the 3D SSIM map (Gaussian window, sigma 1.5 voxels, truncated
      at 3.5 sigma: 11^3; K1 0.01, K2 0.03; population covariances, as in Wang
      et al. 2004) averaged over the mask voxels only. Both volumes are set to 0
      outside the mask first, so voxels outside the brain never enter a window
      as signal; the volume is cropped to the mask's bounding box plus the
      window radius, which leaves every in-mask SSIM value unchanged.
    - ``ncc`` is the Pearson correlation of the in-mask voxels (zero-normalized
      cross-correlation); ``nan`` when either side is constant.

    Returns:
        dict with float values for ``psnr``, ``ssim``, ``mse``, ``l1``, ``ncc``.
    """
    _check_same_shape(pred, target, mask)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    inside = _as_mask(mask)
    if not inside.any():
        raise ValueError("the mask is empty")
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    p, t = pred[inside], target[inside]
    diff = p - t
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else float(10 * np.log10(data_range**2 / mse))
    return {
        "psnr": psnr,
        "ssim": _masked_ssim(pred, target, inside, data_range),
        "mse": mse,
        "l1": float(np.mean(np.abs(diff))),
        "ncc": _pearson(p, t),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b) / denom) if denom > 0 else math.nan


def _masked_ssim(
    pred: np.ndarray, target: np.ndarray, inside: np.ndarray, data_range: float
) -> float:
    from skimage.metrics import structural_similarity

    # Crop to the mask's bounding box plus a window radius (exact, and fast).
    coords = np.nonzero(inside)
    box = tuple(
        slice(max(int(c.min()) - _SSIM_RADIUS, 0), int(c.max()) + _SSIM_RADIUS + 1) for c in coords
    )
    sub_mask = inside[box]
    p = np.where(sub_mask, pred[box], 0.0)
    t = np.where(sub_mask, target[box], 0.0)
    # skimage needs every side >= the window: pad small crops with zeros (outside = 0 anyway).
    pad = [(0, max(0, 2 * _SSIM_RADIUS + 1 - s)) for s in p.shape]
    p, t, sub_mask = (np.pad(a, pad) for a in (p, t, sub_mask))
    _, ssim_map = structural_similarity(
        p,
        t,
        data_range=data_range,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        full=True,
    )
    return float(ssim_map[sub_mask].mean())


def bland_altman(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Voxel-wise Bland-Altman agreement of ``pred`` with ``target`` inside ``mask``.

    ``bias`` is the mean of pred - target; the 95% limits of agreement are
    bias -/+ 1.96 times the sample standard deviation (ddof 1) of the
    differences. ``n`` is the voxel count (a float, like every value here);
    limits are ``nan`` with fewer than two voxels.
    """
    _check_same_shape(pred, target, mask)
    inside = _as_mask(mask)
    diff = np.asarray(pred, dtype=np.float64)[inside] - np.asarray(target, dtype=np.float64)[inside]
    n = diff.size
    if n == 0:
        return {"bias": math.nan, "loa_low": math.nan, "loa_high": math.nan, "n": 0.0}
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    return {"bias": bias, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "n": float(n)}


def _left_right_axis(affine: np.ndarray | None) -> int:
    if affine is None:
        return 0
    return int(np.argmax(np.abs(np.asarray(affine)[0, :3])))


def _voxel_size(affine: np.ndarray | None, voxel_size: Sequence[float]) -> tuple[float, ...]:
    if affine is None:
        return tuple(float(v) for v in voxel_size)
    return tuple(float(v) for v in np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0)))


def _mirror_sum(reference: np.ndarray, axis: int) -> int | None:
    """first + last index of ``reference``'s extent along ``axis``: i mirrors to this minus i."""
    ref = np.moveaxis(_as_mask(reference), axis, 0)
    present = np.nonzero(ref.reshape(ref.shape[0], -1).any(axis=1))[0]
    return None if present.size == 0 else int(present[0] + present[-1])


def mirror_left_right(volume: np.ndarray, reference: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Mirror ``volume`` across the mid-sagittal plane of ``reference``'s extent.

    The plane is the middle of the non-zero extent of ``reference`` (the white
    matter, or the brain) along ``axis``: index i maps to (first + last) - i,
    always an integer, so the mirror is exact with no interpolation. Using the
    tissue's extent rather than the array centre keeps the plane on the brain's
    midline when the field of view is off-centre.
    """
    volume = np.asarray(volume)
    out = np.zeros_like(volume)
    total = _mirror_sum(reference, axis)
    if total is None:
        return out
    src = np.moveaxis(volume, axis, 0)
    dst = np.moveaxis(out, axis, 0)  # a view: writing into it fills ``out``
    for i in range(src.shape[0]):
        j = total - i
        if 0 <= j < src.shape[0]:
            dst[j] = src[i]
    return out


def _check_shell(proximal_mm: tuple[float, float]) -> tuple[float, float]:
    low, high = proximal_mm
    if not 0 <= low < high:
        raise ValueError(f"proximal_mm must be (low, high) with 0 <= low < high, got {proximal_mm}")
    return low, high


def _distance_near(
    lesion: np.ndarray, spacing: Sequence[float], high: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distance (mm) to the nearest voxel of ``lesion`` inside its bounding box grown by ``high``.

    Distances only matter up to ``high``: the grown box holds every voxel that
    close, exactly, and costs far less than a whole-volume distance transform.
    """
    from scipy.ndimage import distance_transform_edt

    coords = np.nonzero(lesion)
    box = tuple(
        slice(max(int(c.min()) - reach, 0), int(c.max()) + reach + 1)
        for c, reach in zip(coords, (int(np.ceil(high / s)) + 1 for s in spacing))
    )
    return box, distance_transform_edt(~lesion[box], sampling=spacing)


def nawm_regions(
    lesion_mask: np.ndarray,
    wm_mask: np.ndarray,
    *,
    proximal_mm: tuple[float, float] = (1, 5),
    voxel_size: Sequence[float] = (1, 1, 1),
    affine: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Normal-appearing white matter (NAWM) regions to compare lesions against.

    NAWM is ``wm_mask`` minus the lesions. With d the Euclidean distance (in mm,
    using the voxel size) from a voxel to the nearest lesion voxel:

    - ``proximal``: NAWM with proximal_mm[0] < d <= proximal_mm[1]; the default
      (1, 5] skips the face-adjacent 1 mm shell, which partial volume mixes with
      the lesion, and keeps the next few millimetres.
    - ``distal``: contralateral NAWM: the lesion mask mirrored across the
      mid-sagittal plane (:func:`mirror_left_right`, plane = middle of the white
      matter's left-right extent), restricted to NAWM and with both the lesions
      and everything within proximal_mm[1] of a lesion removed, so that proximal
      and distal never share a voxel.
    - ``combined``: their union.

    ``affine`` (voxel to world) overrides ``voxel_size`` and picks the array
    axis closest to world x as left-right; without it axis 0 is left-right.
    All three are boolean arrays of the input shape; empty when there is no lesion.
    """
    _check_same_shape(lesion_mask, wm_mask)
    lesion = _as_mask(lesion_mask)
    nawm = _as_mask(wm_mask) & ~lesion
    low, high = _check_shell(proximal_mm)
    if not lesion.any():
        empty = np.zeros(lesion.shape, dtype=bool)
        return {name: empty.copy() for name in REGION_NAMES}
    spacing = _voxel_size(affine, voxel_size)
    box, distance = _distance_near(lesion, spacing, high)
    near = np.zeros(lesion.shape, dtype=bool)
    near[box] = distance <= high
    proximal = np.zeros(lesion.shape, dtype=bool)
    proximal[box] = nawm[box] & (distance > low) & (distance <= high)
    mirrored = mirror_left_right(lesion, wm_mask, axis=_left_right_axis(affine))
    distal = mirrored & nawm & ~near
    return {"proximal": proximal, "distal": distal, "combined": proximal | distal}


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney probability P(pos > neg) + P(pos == neg) / 2.

    Identical to scikit-learn's ``roc_auc_score`` but computed by one sort and
    binary searches, which is much faster on the ~10^5-10^6 white-matter voxels.
    """
    if positive.size == 0 or negative.size == 0:
        return math.nan
    ordered = np.sort(positive)
    below_or_equal = np.searchsorted(ordered, negative, side="right")
    below = np.searchsorted(ordered, negative, side="left")
    greater = positive.size - below_or_equal
    ties = below_or_equal - below
    return float((greater.sum() + 0.5 * ties.sum()) / (positive.size * negative.size))


def lesion_auc(
    psr: np.ndarray,
    lesion_mask: np.ndarray,
    wm_mask: np.ndarray,
    *,
    regions: dict[str, np.ndarray] | None = None,
    **kw,
) -> dict[str, float]:
    """ROC AUC of PSR separating NAWM (positive class) from lesion voxels.

    One value per :func:`nawm_regions` region (``auc_proximal``,
    ``auc_distal``, ``auc_combined``); keyword arguments go to
    :func:`nawm_regions`, or ``regions`` passes its result when several maps
    share one lesion mask. NAWM is the positive class because demyelinated
    lesions have the lower PSR: 1 means every NAWM voxel is above every lesion
    voxel, 0.5 chance. ``nan`` when there is no lesion or the region is empty.
    """
    _check_same_shape(psr, lesion_mask)
    psr = np.asarray(psr, dtype=np.float64)
    lesion_values = psr[_as_mask(lesion_mask)]
    if regions is None:
        regions = nawm_regions(lesion_mask, wm_mask, **kw)
    return {f"auc_{name}": _auc(psr[regions[name]], lesion_values) for name in REGION_NAMES}



LESION_LEVEL_NAMES = tuple(f"lesion_auc_{name}" for name in REGION_NAMES)
"""Columns of :func:`lesion_level_auc`: the paper's lesion-level AUCs."""


def lesion_regions(
    lesion_mask: np.ndarray,
    wm_mask: np.ndarray,
    *,
    proximal_mm: tuple[float, float] = (1, 5),
    voxel_size: Sequence[float] = (1, 1, 1),
    affine: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """Each lesion and the NAWM matched to it, as flat voxel indices (for :func:`lesion_medians`).

    Lesions are the 26-connected components of ``lesion_mask``. With NAWM and
    distances defined as in :func:`nawm_regions`, lesion k is matched with

    - ``proximal``: NAWM at proximal_mm[0] < d_k <= proximal_mm[1] from lesion k
      (the shell around that lesion alone; other lesions are never NAWM);
    - ``distal``: the contralateral mirror of lesion k and its neighbourhood
      (d_k <= proximal_mm[1]) across the white matter's mid-sagittal plane, kept
      where it is NAWM at more than proximal_mm[1] from every lesion. Mirroring
      the neighbourhood rather than the lesion alone keeps a small lesion's
      distal region from being a handful of voxels;
    - ``combined``: their union.

    Returns one dict per lesion (``lesion``, ``proximal``, ``distal``,
    ``combined``); [] without lesions. Regions may be empty.
    """
    from scipy.ndimage import distance_transform_edt, find_objects, label

    _check_same_shape(lesion_mask, wm_mask)
    lesion = _as_mask(lesion_mask)
    nawm = _as_mask(wm_mask) & ~lesion
    low, high = _check_shell(proximal_mm)
    if not lesion.any():
        return []
    spacing = _voxel_size(affine, voxel_size)
    axis = _left_right_axis(affine)
    total = _mirror_sum(wm_mask, axis)
    near_box, near_distance = _distance_near(lesion, spacing, high)
    far_nawm = nawm.copy()
    far_nawm[near_box] &= near_distance > high
    labels, _ = label(lesion, structure=np.ones((3, 3, 3), dtype=bool))
    reach = [int(np.ceil(high / s)) + 1 for s in spacing]
    regions = []
    for k, found in enumerate(find_objects(labels), start=1):
        box = tuple(slice(max(sl.start - r, 0), min(sl.stop + r, n))
                    for sl, r, n in zip(found, reach, lesion.shape))
        offset = np.array([sl.start for sl in box])[:, None]
        distance = distance_transform_edt(labels[box] != k, sampling=spacing)
        proximal = np.argwhere(nawm[box] & (distance > low) & (distance <= high)).T + offset
        distal = np.argwhere(distance <= high).T + offset
        if total is None:
            distal = distal[:, :0]
        else:
            distal[axis] = total - distal[axis]
            distal = distal[:, (distal[axis] >= 0) & (distal[axis] < lesion.shape[axis])]
            distal = distal[:, far_nawm[tuple(distal)]]
        proximal = np.ravel_multi_index(tuple(proximal), lesion.shape)
        distal = np.ravel_multi_index(tuple(distal), lesion.shape)
        regions.append({
            "lesion": np.flatnonzero(labels == k),
            "proximal": proximal,
            "distal": distal,
            "combined": np.union1d(proximal, distal),
        })
    return regions


def lesion_medians(psr: np.ndarray, regions: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Median PSR of each lesion and of each of its NAWM regions (``nan`` where a region is empty)."""
    flat = np.asarray(psr, dtype=np.float64).ravel()
    return {
        name: np.array([np.median(flat[r[name]]) if r[name].size else math.nan for r in regions])
        for name in ("lesion", *REGION_NAMES)
    }


def lesion_level_auc_of(medians: dict[str, np.ndarray]) -> dict[str, float]:
    """AUCs over lesions of :func:`lesion_medians` (one scan's, or several concatenated: pooled).

    NAWM medians are the positive class, lesion medians the negative, as in
    :func:`lesion_auc`; lesions whose region is empty are left out of that region's AUC.
    """
    lesions = medians["lesion"]
    out = {}
    for name in REGION_NAMES:
        values = medians[name]
        keep = np.isfinite(values)
        out[f"lesion_auc_{name}"] = _auc(values[keep], lesions[keep])
    return out


def lesion_level_auc(
    psr: np.ndarray,
    lesion_mask: np.ndarray,
    wm_mask: np.ndarray,
    *,
    regions: list[dict[str, np.ndarray]] | None = None,
    **kw,
) -> dict[str, float]:
    """Lesion-level ROC AUC, as the DEMIST paper reports it beside the voxel-wise one.

    Each lesion (a connected component) is one observation: its median PSR
    against the median PSR of its own proximal and distal NAWM
    (:func:`lesion_regions`), so a large lesion counts as much as a small one
    and partial-volume edges weigh less than in :func:`lesion_auc`. Returns
    ``lesion_auc_proximal``, ``lesion_auc_distal`` and ``lesion_auc_combined``:
    1 when every lesion is darker than every matched NAWM region, 0.5 chance,
    ``nan`` without lesions. ``regions`` passes :func:`lesion_regions`' result when
    several maps share one lesion mask; keyword arguments go to it otherwise.
    """
    _check_same_shape(psr, lesion_mask)
    if regions is None:
        regions = lesion_regions(lesion_mask, wm_mask, **kw)
    if not regions:
        return {name: math.nan for name in LESION_LEVEL_NAMES}
    return lesion_level_auc_of(lesion_medians(psr, regions))


def robust_z(values) -> np.ndarray:
    """Median/MAD z-scores: how far each value sits from the cohort, robustly.

    z = (x - median) / (1.4826 MAD), which matches the ordinary z-score for
    normal data but is not dragged by the outliers it is meant to find. When
    more than half the values are equal (MAD 0) the mean absolute deviation
    scaled by 1.2533 is used instead (Iglewicz & Hoaglin); when all are equal
    every z is 0. Spreads below 1e-6 of the median count as zero: they are the
    float32 rounding noise of equal values (images are stored as float32).
    ``nan`` inputs are ignored and stay ``nan``. With fewer than three finite
    values no value can be told apart from the rest: all z are 0.
    """
    x = np.asarray(values, dtype=np.float64)
    z = np.full(x.shape, np.nan)
    finite = np.isfinite(x)
    if finite.sum() < 3:
        z[finite] = 0.0
        return z
    median = np.median(x[finite])
    deviation = np.abs(x[finite] - median)
    # Spreads below this are float32 rounding noise of equal values, not variation.
    negligible = 1e-6 * abs(median)
    scale = 1.4826 * np.median(deviation)
    if scale <= negligible:
        scale = 1.2533 * np.mean(deviation)
    z[finite] = 0.0 if scale <= negligible else (x[finite] - median) / scale
    return z


def pooled_lesion_auc(medians: Mapping[str, dict[str, np.ndarray]]) -> list[dict]:
    """One row per method: the lesion-level AUCs over every pooled lesion, and how many there were."""
    return [{"method": m, "n_lesions": int(v["lesion"].size), **lesion_level_auc_of(v)} for m, v in medians.items()]
