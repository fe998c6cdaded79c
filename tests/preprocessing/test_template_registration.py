"""Registration to an output-space template recovers a known deformation.

The "subject" is the template's own brain pushed through a known transform (a
rotation, anisotropic shrinking and shift, then a smooth sinusoidal warp of a
few millimetres), on a coarser grid of its own; the registration must send
every template brain point back where the known transform says (and the
masks must overlap). Real anatomy is checked by the participant tests and by
benchmarks/template_accuracy.py on ../shared/data.
"""

from __future__ import annotations

import numpy as np
import pytest

from demist_bids.preprocessing.grids import ras_grid, resample
from demist_bids.preprocessing.sitk_bridge import RAS_TO_LPS
from demist_bids.preprocessing.template_registration import (
    dice, register_to_template, to_template, write_transform)
from demist_bids.preprocessing.templates import load_space_template


def _known_transform(template):
    """Subject points -> template points (LPS): an affine after a smooth warp."""
    import SimpleITK as sitk

    angle = np.deg2rad(8.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple((rotation @ np.diag([1.12, 1.05, 1.1])).ravel()))
    affine.SetTranslation((6.0, -9.0, 4.0))
    grid = sitk.Image([40, 48, 40], sitk.sitkVectorFloat64, 3)
    grid.SetSpacing((5.0, 5.0, 5.0))
    grid.SetOrigin((-100.0, -120.0, -80.0))
    i, j, k = np.meshgrid(*[np.arange(n) for n in (40, 48, 40)], indexing="ij")
    field = np.stack([3.0 * np.sin(2 * np.pi * j / 48), 3.0 * np.sin(2 * np.pi * k / 40),
                      3.0 * np.sin(2 * np.pi * i / 40)], axis=-1)
    warp = sitk.GetImageFromArray(field.transpose(2, 1, 0, 3), isVector=True)
    warp.CopyInformation(grid)
    return sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(warp)])


@pytest.fixture(scope="module")
def case():
    template = load_space_template("MNI152NLin2009aSym", "1")
    truth = _known_transform(template)
    affine, shape = ras_grid(template.t1w, 1.5)
    subject = resample(template.t1w, affine, shape, transform=truth)
    mask = resample(template.brain_mask, affine, shape, order=0, transform=truth, dtype=np.uint8)
    points = np.argwhere(np.asanyarray(template.brain_mask.dataobj) > 0)[::2000]
    lps = (RAS_TO_LPS @ template.t1w.affine @ np.c_[points, np.ones(len(points))].T)[:3].T
    return template, truth, subject, mask, lps


def _error_mm(forward, truth, lps) -> np.ndarray:
    """How far truth(forward(x)) lands from each template point x (0 for a perfect result)."""
    back = np.array([truth.TransformPoint(forward.TransformPoint(tuple(map(float, p))))
                     for p in lps])
    return np.linalg.norm(back - lps, axis=1)


@pytest.mark.slow
def test_affine_then_warp_recovers_a_known_deformation(case, tmp_path):
    import SimpleITK as sitk

    template, truth, subject, mask, lps = case
    affine_only = register_to_template(subject, mask, template, nonlinear=False)
    result = register_to_template(subject, mask, template)
    affine_error = np.median(_error_mm(affine_only.forward, truth, lps))
    error = _error_mm(result.forward, truth, lps)
    assert np.median(error) < 0.8 and np.percentile(error, 90) < 1.5, (np.median(error),
                                                                      affine_error)
    assert np.median(error) < affine_error  # the warp adds something the affine cannot do
    warped = to_template(mask, template, result.forward, order=0, dtype=np.uint8)
    assert dice(warped.dataobj, template.brain_mask.dataobj) > 0.95
    assert result.metrics["InverseErrorMm"] < 0.5
    # the files hold the same transforms
    write_transform(result.forward, tmp_path / "fwd.h5")
    write_transform(result.inverse, tmp_path / "inv.h5")
    again = sitk.ReadTransform(str(tmp_path / "fwd.h5"))
    assert np.allclose([again.TransformPoint(tuple(map(float, p))) for p in lps[:50]],
                       [result.forward.TransformPoint(tuple(map(float, p))) for p in lps[:50]])
    inverse = sitk.ReadTransform(str(tmp_path / "inv.h5"))
    subject_points = [result.forward.TransformPoint(tuple(map(float, p))) for p in lps]
    round_trip = np.array([inverse.TransformPoint(p) for p in subject_points])
    assert np.median(np.linalg.norm(round_trip - lps, axis=1)) < 0.5


def test_registration_fails_when_it_should(case):
    """The check can fail: an unrelated transform is far from the truth."""
    import SimpleITK as sitk

    _, truth, _, _, lps = case
    assert np.median(_error_mm(sitk.Transform(3, sitk.sitkIdentity), truth, lps)) > 5.0


@pytest.mark.shared_data
def test_real_brain_overlaps_the_template_brain(shared_data):
    """sub-cs07 (skull-stripped, real anatomy): in template space its brain covers the template."""
    import nibabel as nib

    from demist_bids.preprocessing.brain_mask import support_mask

    path = shared_data / "openms_subset" / "sub-cs07" / "anat" / "sub-cs07_T1w.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    t1w = nib.load(path)
    t1w = nib.Nifti1Image(np.clip(t1w.get_fdata(dtype=np.float32), 0, None), t1w.affine)
    mask = support_mask(t1w)
    template = load_space_template("MNI152NLin2009aSym", "1")
    result = register_to_template(t1w, mask, template)
    warped = to_template(mask, template, result.forward, order=0, dtype=np.uint8)
    assert dice(warped.dataobj, template.brain_mask.dataobj) > 0.95
    assert result.metrics["RuntimeSeconds"] < 120  # two CPUs shared with other jobs
