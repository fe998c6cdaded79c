"""The phantom's images have the contrasts, values and variation the issue asks for."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from .conftest import COHORT_ARGS


def _load(scan):
    images = {
        name: np.asanyarray(nib.load(getattr(scan, name)).dataobj).astype(np.float32)
        for name in ("t1w", "psr", "dseg", "lesion_mask", "brain_mask")
    }
    images["lesion_mask"] = images["lesion_mask"] > 0
    return images


def _flair_on_t1w(scan, matrix):
    """The FLAIR resampled onto the T1w grid through a FLAIR->T1w world matrix."""
    t1w, flair = nib.load(scan.t1w), nib.load(scan.flair)
    to_flair = np.linalg.inv(flair.affine) @ np.linalg.inv(matrix) @ t1w.affine
    index = np.indices(t1w.shape).reshape(3, -1)
    coordinates = to_flair[:3, :3] @ index + to_flair[:3, 3:4]
    data = np.asanyarray(flair.dataobj).astype(np.float32)
    return ndi.map_coordinates(data, coordinates, order=1, cval=np.nan).reshape(t1w.shape)


def _pure(dseg, label):
    """Voxels of a class away from its border (little partial volume)."""
    return ndi.binary_erosion(dseg == label)


def test_psr_levels_per_tissue(cohort):
    _, scans = cohort
    for scan in scans:
        im = _load(scan)
        nawm = _pure(im["dseg"], 3) & ~ndi.binary_dilation(im["lesion_mask"], iterations=3)
        wm, gm = np.median(im["psr"][nawm]), np.median(im["psr"][im["dseg"] == 2])
        csf = np.median(im["psr"][_pure(im["dseg"], 1)])
        assert 0.14 <= wm <= 0.21, wm
        assert 0.055 <= gm <= 0.10, gm
        assert csf < 0.02, csf
        assert np.all(im["psr"][~(im["brain_mask"] > 0)] == 0)
        assert im["psr"].max() < 0.4


def test_lesions_lower_psr_with_graded_rim(cohort):
    _, scans = cohort
    for scan in (s for s in scans if s.group == "MS"):
        im = _load(scan)
        lesion = im["lesion_mask"]
        core = ndi.binary_erosion(lesion)
        ring = ndi.binary_dilation(lesion, iterations=1) & ~lesion & (im["dseg"] == 3)
        nawm = _pure(im["dseg"], 3) & ~ndi.binary_dilation(lesion, iterations=4)
        psr = im["psr"]
        levels = [np.median(psr[m]) for m in ((core if core.any() else lesion), ring, nawm)]
        assert levels[0] < 0.8 * levels[2], levels  # clearly lower than NAWM
        assert levels[0] < levels[1] < levels[2], levels  # graded rim between them


def test_t1w_and_flair_contrast(cohort):
    _, scans = cohort
    for scan in scans:
        im = _load(scan)
        flair = _flair_on_t1w(scan, scan.flair_to_t1w)
        pure = {label: _pure(im["dseg"], label) & np.isfinite(flair) for label in (1, 2, 3)}
        pure[2] = (im["dseg"] == 2) & np.isfinite(flair)
        t1 = {label: np.median(im["t1w"][mask]) for label, mask in pure.items()}
        fl = {label: np.median(flair[mask]) for label, mask in pure.items()}
        assert t1[3] > t1[2] > t1[1], t1  # T1w: WM > GM > CSF
        assert fl[2] > fl[3] > fl[1], fl  # FLAIR: GM > WM > CSF (dark)
        if scan.group == "MS":
            lesion = im["lesion_mask"] & np.isfinite(flair)
            nawm = pure[3] & ~ndi.binary_dilation(im["lesion_mask"], iterations=3)
            assert np.median(flair[lesion]) > 1.2 * np.median(flair[nawm])  # FLAIR-hyperintense
            assert np.median(im["t1w"][lesion]) < np.median(im["t1w"][nawm])  # T1w-hypointense


def test_head_shell_outside_brain(cohort):
    _, scans = cohort
    im = _load(scans[0])
    scale = COHORT_ARGS["scale"]  # the scalp lies 8-14 canonical mm outside the brain
    brain = im["brain_mask"] > 0
    head = ndi.binary_dilation(brain, iterations=int(np.ceil(14 * scale)) + 1) & ~brain
    wm_level = np.median(im["t1w"][im["dseg"] == 3])
    # scalp and diploe: bright tissue outside the brain that skull-stripping must remove
    assert np.percentile(im["t1w"][head], 90) > 0.5 * wm_level


def test_transform_aligns_flair_with_t1w(cohort):
    """Resampling through the stored matrix matches anatomy better than a perturbed one."""
    _, scans = cohort
    scan = scans[0]
    im = _load(scan)
    brain = (im["brain_mask"] > 0) & (im["dseg"] > 0)
    expected = np.select([im["dseg"] == 1, im["dseg"] == 2, im["dseg"] == 3], [0.05, 0.72, 0.52])

    def agreement(matrix):
        flair = _flair_on_t1w(scan, matrix)
        ok = brain & np.isfinite(flair)
        return np.corrcoef(flair[ok], expected[ok])[0, 1]

    true = agreement(scan.flair_to_t1w)
    angle = np.deg2rad(3.0)
    rotated = np.eye(4)
    rotated[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    shifted = np.eye(4)
    shifted[:3, 3] = [1.5, -1.5, 1.5]
    wrong = [np.eye(4), rotated @ scan.flair_to_t1w, shifted @ scan.flair_to_t1w]
    # bias, noise and thick slices keep the correlation modest; misalignment lowers it
    assert true > max(agreement(matrix) for matrix in wrong) + 0.05
    motion = json.loads(scan.transform.read_text())["HeadMotion"]
    assert 2.0 <= np.linalg.norm(motion["RotationDegreesXYZ"]) <= 5.0 + 1e-9
    assert 2.0 <= np.linalg.norm(motion["TranslationMm"]) <= 6.0 + 1e-9


def test_subjects_differ_and_sessions_share_anatomy(cohort):
    _, scans = cohort
    by_key = {(s.subject, s.session): _load(s) for s in scans}
    first, other = by_key[("01", "01")], by_key[("02", "01")]
    a, b = first["brain_mask"] > 0, other["brain_mask"] > 0
    dice_subjects = 2 * np.sum(a & b) / (a.sum() + b.sum())
    later = by_key[("01", "02")]["brain_mask"] > 0
    assert dice_subjects < 0.97
    assert np.array_equal(a, later)  # same anatomy at the second session
    nawm = {s.subject: s.nawm_psr for s in scans if s.session == "01"}
    assert len({round(v, 4) for v in nawm.values()}) == 3
    for subject in {s.subject for s in scans if s.group == "MS"}:
        masks = [by_key[(subject, ses)]["lesion_mask"] for ses in ("01", "02")]
        overlap = np.sum(masks[0] & masks[1]) / max(masks[0].sum(), 1)
        assert overlap > 0.5 and not np.array_equal(*masks)  # lesions evolve, slightly
