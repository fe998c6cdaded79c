"""N4, rigid registration, brain masks, tissues and scaling on small synthetic heads."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from demist_bids.preprocessing import brain_mask as bm
from demist_bids.preprocessing.bias import n4_correct
from demist_bids.preprocessing.intensity import percentile_scale
from demist_bids.preprocessing.registration import register_rigid
from demist_bids.preprocessing.templates import NILEARN_NAME, TEMPLATEFLOW_NAME, load_template
from demist_bids.preprocessing.tissues import segment_tissues

from .synthetic import head_pair, rigid_matrix, stripped_pair  # noqa: F401


def _dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _world_points(mask_img, step=7):
    ijk = np.argwhere(np.asanyarray(mask_img.dataobj) > 0)[::step]
    return (mask_img.affine[:3, :3] @ ijk.T).T + mask_img.affine[:3, 3]


def test_n4_flattens_a_known_bias(stripped_pair):  # noqa: F811
    t1w = nib.load(stripped_pair.t1w)
    mask = np.asanyarray(nib.load(stripped_pair.brain_mask).dataobj) > 0
    xyz = _world_points(nib.Nifti1Image(np.ones(t1w.shape, np.uint8), t1w.affine), step=1)
    ramp = np.exp(0.4 * xyz[:, 0] / 70.0).reshape(t1w.shape).astype(np.float32)
    biased = nib.Nifti1Image(t1w.get_fdata(dtype=np.float32) * ramp, t1w.affine)
    corrected, field = n4_correct(biased)
    def left_right_ratio(img):
        data = img.get_fdata()
        half = t1w.shape[0] // 2
        return data[:half][mask[:half]].mean() / data[half:][mask[half:]].mean()
    assert abs(np.log(left_right_ratio(biased))) > 0.25
    assert abs(np.log(left_right_ratio(corrected))) < 0.5 * abs(np.log(left_right_ratio(biased)))
    assert field.shape == t1w.shape


def test_rigid_registration_recovers_a_known_motion_below_1mm(head_pair):  # noqa: F811
    result = register_rigid(nib.load(head_pair.t1w), nib.load(head_pair.flair), voxel_mm=3.0,
                            shrink_factors=(2, 1), smoothing_mm=(4.0, 0.0))
    ras = _world_points(nib.load(head_pair.brain_mask))
    found = np.array([result.transform.TransformPoint(tuple(map(float, p * [-1, -1, 1])))
                      for p in ras]) * [-1, -1, 1]
    truth = (head_pair.flair_to_t1w[:3, :3] @ ras.T).T + head_pair.flair_to_t1w[:3, 3]
    error = np.linalg.norm(found - truth, axis=1)
    assert error.max() < 1.0, f"residual {error.mean():.2f} mean, {error.max():.2f} max mm"
    assert result.final_metric < 0


def test_skull_stripped_detection(head_pair, stripped_pair):  # noqa: F811
    assert not bm.is_skull_stripped(nib.load(head_pair.t1w))
    assert bm.is_skull_stripped(nib.load(stripped_pair.t1w))
    support = bm.support_mask(nib.load(stripped_pair.t1w))
    assert _dice(support.dataobj, nib.load(stripped_pair.brain_mask).dataobj) > 0.95


def test_template_mask_on_a_head_with_skull(head_pair):  # noqa: F811
    result = bm.template_brain_mask(nib.load(head_pair.t1w), subject_has_skull=True)
    assert result.template == NILEARN_NAME  # the test's TemplateFlow home holds no files
    assert _dice(result.mask.dataobj, nib.load(head_pair.brain_mask).dataobj) > 0.9


def test_templateflow_is_used_only_when_its_files_are_real(tmp_path, monkeypatch):
    home = tmp_path / "tf"
    folder = home / f"tpl-{TEMPLATEFLOW_NAME}"
    folder.mkdir(parents=True)
    t1w = folder / f"tpl-{TEMPLATEFLOW_NAME}_res-02_T1w.nii.gz"
    mask = folder / f"tpl-{TEMPLATEFLOW_NAME}_res-02_desc-brain_mask.nii.gz"
    t1w.touch()
    mask.touch()  # offline TemplateFlow leaves 0-byte stubs like these
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    assert load_template().name == NILEARN_NAME
    nilearn = load_template()
    small = np.asanyarray(nilearn.t1w.dataobj)[::2, ::2, ::2]
    affine = nilearn.t1w.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(small, affine), t1w)
    small_mask = np.asanyarray(nilearn.brain_mask.dataobj)[::2, ::2, ::2]
    nib.save(nib.Nifti1Image(small_mask, affine), mask)
    found = load_template()
    assert found.name == TEMPLATEFLOW_NAME and found.has_skull and found.t1w.shape == small.shape


def test_tissue_classes_follow_t1w_contrast(stripped_pair):  # noqa: F811
    t1w = nib.load(stripped_pair.t1w)
    mask = nib.load(stripped_pair.brain_mask)
    dseg = np.asanyarray(segment_tissues(t1w, mask).dataobj)
    data = t1w.get_fdata()
    csf, gm, wm = (data[dseg == label].mean() for label in (3, 1, 2))  # BIDS: 1 GM, 2 WM, 3 CSF
    assert csf < gm < wm
    assert dseg.dtype == np.uint8 and set(np.unique(dseg)) == {0, 1, 2, 3}
    assert not dseg[np.asanyarray(mask.dataobj) == 0].any()


def test_percentile_scaling_maps_the_brain_range_to_0_1(stripped_pair):  # noqa: F811
    t1w = nib.load(stripped_pair.t1w)
    mask = nib.load(stripped_pair.brain_mask)
    scaled, (low, high) = percentile_scale(t1w, mask)
    data = scaled.get_fdata()
    inside = np.asanyarray(mask.dataobj) > 0
    assert data.min() == 0.0 and data.max() == 1.0 and scaled.get_data_dtype() == np.float32
    assert np.isclose(np.percentile(data[inside], 99.5), 1.0, atol=1e-3)
    assert (data[inside] == 1.0).mean() == pytest.approx(0.005, abs=0.002)
    assert not data[~inside].any()
    assert low == pytest.approx(t1w.get_fdata()[inside].min())


def test_percentile_scaling_refuses_an_empty_mask(stripped_pair):  # noqa: F811
    t1w = nib.load(stripped_pair.t1w)
    empty = nib.Nifti1Image(np.zeros(t1w.shape, np.uint8), t1w.affine)
    with pytest.raises(ValueError, match="empty brain mask"):
        percentile_scale(t1w, empty)


def test_real_skull_stripped_and_raw_inputs_are_told_apart(shared_data):
    root = shared_data / "openms_subset"
    from demist_bids.preprocessing import load_validated

    assert bm.is_skull_stripped(load_validated(root / "sub-cs07/anat/sub-cs07_T1w.nii.gz")[0])
    raw = root / "sub-long01/ses-2/anat/sub-long01_ses-2_T1w.nii.gz"
    assert not bm.is_skull_stripped(load_validated(raw)[0])


def test_synthetic_motion_matrix_is_rigid():
    mat = rigid_matrix((3, 4, 5), (1, 2, 3), center=(10, 0, 0))
    assert np.allclose(mat[:3, :3] @ mat[:3, :3].T, np.eye(3))
    assert np.allclose(mat @ [10, 0, 0, 1], [11, 2, 3, 1])  # the centre only shifts


def test_template_with_skull_is_registered_head_to_head(head_pair):  # noqa: F811
    """The TemplateFlow path: a whole-head template and its mask, placed elsewhere in the world."""
    from demist_bids.preprocessing.templates import BrainTemplate

    subject = nib.load(head_pair.t1w)
    truth = nib.load(head_pair.brain_mask)
    moved = rigid_matrix((6.0, 0.0, -4.0), (10.0, -6.0, 5.0)) @ subject.affine
    template = BrainTemplate(
        name="head template", has_skull=True,
        t1w=nib.Nifti1Image(subject.get_fdata(dtype=np.float32), moved),
        brain_mask=nib.Nifti1Image(np.asanyarray(truth.dataobj), moved),
    )
    result = bm.template_brain_mask(subject, subject_has_skull=True, template=template)
    assert result.template == "head template"
    assert _dice(result.mask.dataobj, truth.dataobj) > 0.95
