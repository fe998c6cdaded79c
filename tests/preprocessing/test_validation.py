"""check_image / load_validated: every edge case has a defined outcome."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from demist_bids.exceptions import BadDataError
from demist_bids.preprocessing import check_image, load_validated

from .synthetic import head_pair  # noqa: F401


def _write(path, data, affine=None, qform=True, sform=True, dtype=None):
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data if dtype is None else data.astype(dtype), affine)
    img.set_qform(affine if qform else None, code=1 if qform else 0)
    img.set_sform(affine if sform else None, code=1 if sform else 0)
    nib.save(img, path)
    return path


def _blob(shape=(40, 40, 40)):
    grid = np.indices(shape).astype(np.float32)
    center = (np.array(shape) - 1) / 2.0
    r2 = sum(((g - c) / (s / 3)) ** 2 for g, c, s in zip(grid, center, shape))
    return (100.0 * np.exp(-r2)).astype(np.float32)


def test_clean_image_needs_no_fix(tmp_path):
    assert check_image(_write(tmp_path / "a.nii.gz", _blob())) == []


def test_4d_with_one_volume_is_squeezed(tmp_path):
    path = _write(tmp_path / "a.nii.gz", _blob()[..., None])
    img, fixes = load_validated(path)
    assert img.shape == (40, 40, 40)
    assert any("squeezed" in f for f in fixes)


def test_4d_with_several_volumes_is_refused_naming_the_file(tmp_path):
    path = _write(tmp_path / "sub-01_T1w.nii.gz", np.stack([_blob()] * 3, axis=-1))
    with pytest.raises(BadDataError, match=r"sub-01_T1w\.nii\.gz: a 4D image with 3 volumes"):
        check_image(path)
    assert BadDataError.exit_code == 65


@pytest.mark.parametrize("shape", [(40, 40), (40, 40, 1)])
def test_2d_images_are_refused(tmp_path, shape):
    path = _write(tmp_path / "flat.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(BadDataError, match="flat.nii.gz: a 2D image"):
        check_image(path)


def test_thin_slab_is_refused(tmp_path):
    path = _write(tmp_path / "slab.nii.gz", _blob((40, 40, 4)))
    with pytest.raises(BadDataError, match="slab.nii.gz"):
        check_image(path)


@pytest.mark.parametrize("value", [0.0, 5.0])
def test_all_zero_and_constant_images_are_refused(tmp_path, value):
    path = _write(tmp_path / "empty.nii.gz", np.full((40, 40, 40), value, np.float32))
    message = "empty.nii.gz: (all voxels are zero|the image is constant)"
    with pytest.raises(BadDataError, match=message):
        check_image(path)


def test_nans_are_zeroed_and_recorded(tmp_path):
    data = _blob()
    data[:5, :5, :5] = np.nan
    img, fixes = load_validated(_write(tmp_path / "a.nii.gz", data))
    assert np.isfinite(img.get_fdata()).all()
    assert "replaced 125 NaN/Inf voxels with 0" in fixes


def test_all_nan_image_is_refused(tmp_path):
    path = _write(tmp_path / "nan.nii.gz", np.full((40, 40, 40), np.nan, np.float32))
    with pytest.raises(BadDataError, match="nan.nii.gz: all voxels are zero"):
        check_image(path)


def test_float_negatives_are_clipped_and_uint16_becomes_float32(tmp_path):
    data = _blob() - 5.0
    img, fixes = load_validated(_write(tmp_path / "neg.nii.gz", data))
    assert img.get_fdata().min() == 0.0
    assert any(f.startswith("clipped") and "negative" in f for f in fixes)
    img16, fixes16 = load_validated(_write(tmp_path / "u16.nii.gz", _blob() * 10, dtype=np.uint16))
    assert img16.get_data_dtype() == np.float32 and fixes16 == []
    assert np.array_equal(img16.get_fdata(), (_blob() * 10).astype(np.uint16))


@pytest.mark.parametrize("codes", ["LPS", "LAS"])
def test_other_orientations_keep_their_world_geometry(tmp_path, codes):
    ras = nib.Nifti1Image(_blob(), np.diag([1.0, 1.0, 1.0, 1.0]))
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.orientations.axcodes2ornt(tuple(codes)))
    other = ras.as_reoriented(ornt)
    path = _write(tmp_path / "o.nii.gz", np.asanyarray(other.dataobj), other.affine)
    img, fixes = load_validated(path)
    assert f"reoriented {codes} to RAS" in fixes
    # the same world point holds the same value
    back = img.as_reoriented(nib.orientations.io_orientation(img.affine))
    assert np.allclose(back.get_fdata(), ras.get_fdata())
    assert np.allclose(back.affine, ras.affine)


def test_oblique_anisotropic_is_noted(tmp_path):
    angle = np.radians(10)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 3.0])
    _, fixes = load_validated(_write(tmp_path / "obl.nii.gz", _blob(), affine))
    assert any(f.startswith("oblique grid (10.0 deg)") for f in fixes)


def test_missing_sform_is_taken_from_qform(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-20, -20, -20]
    img, fixes = load_validated(_write(tmp_path / "q.nii.gz", _blob(), affine, sform=False))
    assert "no valid sform: copied the qform to the sform" in fixes
    assert np.allclose(img.affine, affine)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(BadDataError, match="nothere.nii.gz: file not found"):
        check_image(tmp_path / "nothere.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(BadDataError, match="bad.nii.gz: cannot be read"):
        check_image(bad)


def test_real_data_checks(shared_data):
    long01 = shared_data / "openms_subset/sub-long01/ses-1/anat/sub-long01_ses-1_T1w.nii.gz"
    assert check_image(long01) == ["reoriented LPS to RAS",
                                   "oblique grid (3.2 deg) resampled to the 1 mm RAS grid"]
    cs07 = check_image(shared_data / "openms_subset/sub-cs07/anat/sub-cs07_T1w.nii.gz")
    assert "no valid sform: copied the qform to the sform" in cs07
    assert any(f.startswith("clipped") for f in cs07)


def test_pair_check_refuses_a_flair_that_misses_most_of_the_head(head_pair, tmp_path):  # noqa: F811
    from demist_bids.preprocessing import check_pair
    from demist_bids.preprocessing.validation import header_coverage

    flair = nib.load(head_pair.flair)
    assert header_coverage(nib.load(head_pair.t1w), flair) > 0.9
    assert check_pair(head_pair.t1w, head_pair.flair) == [
        "T1w: 3.00x3.00x3.00 mm voxels resampled to 1 mm isotropic",
        "FLAIR: 3.00x3.00x3.00 mm voxels resampled to 1 mm isotropic",
    ]
    top = flair.slicer[:, :, flair.shape[2] * 3 // 4:]  # the top quarter of the slices only
    nib.save(top, tmp_path / "sub-01_FLAIR.nii.gz")
    coverage = header_coverage(nib.load(head_pair.t1w), top)
    assert 0.0 < coverage < 0.4
    with pytest.raises(BadDataError, match=r"sub-01_FLAIR.nii.gz: its field of view covers only"):
        check_pair(head_pair.t1w, tmp_path / "sub-01_FLAIR.nii.gz")
    # a partial but sufficient field of view passes and is measured again after registration
    nib.save(flair.slicer[:, :, flair.shape[2] // 4:], tmp_path / "most.nii.gz")
    check_pair(head_pair.t1w, tmp_path / "most.nii.gz")
