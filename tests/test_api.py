"""``synthesize_pair`` (the Python API): refused pairs name the file and leave nothing behind;
a real pair gives the participant level's maps on the T1w grid."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from tests.utils.damaged import blob, write_image


def _image(path, data=None, affine=None):
    affine = np.eye(4) if affine is None else affine
    img = nib.Nifti1Image(blob() if data is None else data, None)
    img.set_sform(affine, code=1)
    if abs(np.linalg.det(affine[:3, :3])) > 1e-8:
        img.set_qform(affine, code=1)
    else:
        img.set_qform(None)  # a qform cannot hold a singular matrix
    nib.save(img, str(path))
    return path


def test_import_stays_light():
    code = ("import sys, demist_bids; from demist_bids import synthesize_pair, PSRResult; "
            "assert not {'torch', 'nipype', 'bids', 'nibabel'} & set(sys.modules), sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _refused(t1w, flair, match):
    from demist_bids import synthesize_pair

    with pytest.raises(ValueError, match=match) as info:
        synthesize_pair(t1w, flair)
    return info.value


def test_not_3d_is_a_value_error_naming_the_file(tmp_path):
    t1w = write_image(tmp_path / "t1w.nii.gz")
    four_d = _image(tmp_path / "flair_4d.nii.gz", np.stack([blob()] * 3, axis=-1))
    err = _refused(t1w, four_d, "flair_4d.nii.gz: a 4D image with 3 volumes")
    assert err.exit_code == 65
    flat = _image(tmp_path / "t1w_2d.nii.gz", blob()[:, :, :1])
    _refused(flat, t1w, "t1w_2d.nii.gz: a 2D image")


def test_no_overlap_is_a_value_error_naming_the_flair(tmp_path):
    t1w = write_image(tmp_path / "t1w.nii.gz")
    far = np.eye(4)
    far[:3, 3] = 400.0
    flair = _image(tmp_path / "flair_far.nii.gz", affine=far)
    _refused(t1w, flair, r"flair_far.nii.gz: its field of view covers only 0% of the T1w head")


def test_orientation_that_cannot_be_fixed_is_a_value_error(tmp_path):
    t1w = write_image(tmp_path / "t1w.nii.gz")
    singular = np.eye(4)
    singular[:3, :3] = [[1, 0, 0], [1, 0, 0], [0, 0, 1]]  # two axes point the same way
    flair = _image(tmp_path / "flair_singular.nii.gz", affine=singular)
    _refused(t1w, flair, "flair_singular.nii.gz: the affine is singular")


def test_orientation_that_can_be_fixed_passes_the_checks(tmp_path):
    """A FLAIR stored LPS beside a RAS T1w is the same head in world space: accepted."""
    from demist_bids.api import check_pair_files

    t1w = write_image(tmp_path / "t1w.nii.gz")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:2, 3] = 39.0
    flair = _image(tmp_path / "flair_lps.nii.gz", blob()[::-1, ::-1], affine=lps)
    check_pair_files(t1w, flair)


def test_missing_file_is_file_not_found(tmp_path):
    from demist_bids import synthesize_pair

    with pytest.raises(FileNotFoundError, match="absent.nii.gz: file not found") as info:
        synthesize_pair(write_image(tmp_path / "t1w.nii.gz"), tmp_path / "absent.nii.gz")
    assert info.value.exit_code == 66


@pytest.mark.slow
def test_a_phantom_pair_gives_maps_on_the_t1w_grid(tmp_path):
    """The same preprocessing and sampler as the participant level, tiny random model."""
    import torch

    from demist_bids import PSRResult, synthesize_pair
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import save_model
    from demist_bids.phantom import generate_cohort
    from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(sampling={"sampler": "ddim", "steps": 3}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    model_dir = save_model(model, tmp_path / "tiny", card={"name": "tiny-test"})
    generate_cohort(tmp_path / "bids", subjects=1, seed=3, scale=0.45, control_fraction=0.0)
    anat = tmp_path / "bids" / "sub-01" / "anat"

    result = synthesize_pair(anat / "sub-01_T1w.nii.gz", anat / "sub-01_FLAIR.nii.gz",
                             model=model_dir, samples=2, device="cpu", seed=5)
    assert isinstance(result, PSRResult)
    t1w = nib.load(anat / "sub-01_T1w.nii.gz")
    for img in (result.psr, result.std, result.mask):
        assert img.shape == t1w.shape and np.allclose(img.affine, t1w.affine, atol=1e-4)
    psr = result.psr.get_fdata()
    mask = np.asanyarray(result.mask.dataobj) > 0
    assert np.isfinite(psr).all() and mask.any()
    assert np.count_nonzero(psr[~mask]) < 0.1 * mask.sum()  # only the edge blur of resampling
    meta = result.metadata
    assert meta["Sources"] == [str(anat / "sub-01_T1w.nii.gz"), str(anat / "sub-01_FLAIR.nii.gz")]
    assert meta["Sampler"]["Samples"] == 2 and meta["Sampler"]["Seed"] == 5
    assert meta["MagneticFieldStrength"] == 3 and meta["Units"] == "1"
    assert {"registration_cost", "brain_mask_volume_ml"} <= set(meta["QC"])

    # the command line writes the same maps, all files at once
    out = tmp_path / "out" / "sub-01"
    proc = subprocess.run([sys.executable, "-c", "from demist_bids.cli.run import main_synth; main_synth()",
                           anat / "sub-01_T1w.nii.gz", anat / "sub-01_FLAIR.nii.gz", out,
                           "--model", model_dir, "--samples", "2", "--seed", "5",
                           "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["sub-01_PSRmap.json", "sub-01_PSRmap.nii.gz", "sub-01_mask.nii.gz",
                     "sub-01_std.nii.gz"]
    assert np.allclose(nib.load(f"{out}_PSRmap.nii.gz").get_fdata(), psr, atol=1e-6)
