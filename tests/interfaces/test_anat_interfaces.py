"""demist's preprocessing interfaces run as Nipype nodes do: in their own folder, files out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from demist_bids.exceptions import BadDataError
from demist_bids.interfaces.images import (
    PercentileScale,
    ResampleToGrid,
    ResampleToNative,
    ValidateAnatomical,
)
from demist_bids.interfaces.masks import BrainMask, TissueSegmentation
from demist_bids.interfaces.qc import AnatomicalQC
from demist_bids.interfaces.registration import N4BiasCorrection, RigidRegistration
from tests.preprocessing.synthetic import stripped_pair  # noqa: F401


def test_validate_fixes_and_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = np.random.default_rng(0).uniform(1, 2, (32, 32, 32, 1)).astype(np.float32)
    data[0, 0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "in.nii.gz")
    result = ValidateAnatomical(in_file=str(tmp_path / "in.nii.gz")).run()
    assert nib.load(result.outputs.out_file).shape == (32, 32, 32)
    assert result.outputs.fixes[0].startswith("squeezed")
    nib.save(nib.Nifti1Image(np.repeat(data, 2, axis=3), np.eye(4)), tmp_path / "multi.nii.gz")
    with pytest.raises(BadDataError, match="multi.nii.gz: a 4D image with 2 volumes"):
        ValidateAnatomical(in_file=str(tmp_path / "multi.nii.gz")).run()


def test_chain_on_a_skull_stripped_pair(stripped_pair, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    t1w = ValidateAnatomical(in_file=str(stripped_pair.t1w)).run().outputs.out_file
    flair = ValidateAnatomical(in_file=str(stripped_pair.flair)).run().outputs.out_file
    t1w_n4 = N4BiasCorrection(in_file=t1w).run().outputs.out_file
    flair_n4 = N4BiasCorrection(in_file=flair).run().outputs.out_file
    reg = RigidRegistration(fixed_image=t1w_n4, moving_image=flair_n4, voxel_mm=3.0).run().outputs
    assert reg.out_transform.endswith(".tfm") and reg.final_metric < 0
    t1w_grid = ResampleToGrid(in_file=t1w_n4, voxel_mm=2.0).run().outputs
    grid = nib.load(t1w_grid.out_file)
    assert np.allclose(grid.affine[:3, :3], 2 * np.eye(3))
    flair_grid = ResampleToGrid(in_file=flair_n4, reference=t1w_grid.out_file,
                                transform=reg.out_transform).run().outputs
    assert nib.load(flair_grid.out_file).shape == grid.shape
    assert nib.load(flair_grid.fov_mask).get_data_dtype() == np.uint8

    mask = BrainMask(in_file=t1w_grid.out_file, native_file=t1w, fov_mask=t1w_grid.fov_mask).run()
    assert mask.outputs.skull_stripped and mask.outputs.template == "skull-stripped input"
    given = BrainMask(in_file=t1w_grid.out_file, native_file=t1w,
                      in_mask=str(stripped_pair.brain_mask)).run()
    assert given.outputs.template == "input mask"
    dseg = TissueSegmentation(in_file=t1w_grid.out_file, brain_mask=mask.outputs.out_mask).run()
    scaled = PercentileScale(in_file=flair_grid.out_file, brain_mask=mask.outputs.out_mask).run()
    values = nib.load(scaled.outputs.out_file).get_fdata()
    assert values.min() == 0 and values.max() == 1 and scaled.outputs.high > scaled.outputs.low
    native = ResampleToNative(in_file=dseg.outputs.out_dseg, reference=t1w).run()
    native_img = nib.load(native.outputs.out_file)
    assert native_img.shape == nib.load(t1w).shape and native_img.get_data_dtype() == np.uint8

    qc_inputs = dict(
        t1w=t1w_grid.out_file, flair=flair_grid.out_file, flair_fov=flair_grid.fov_mask,
        flair_source=str(stripped_pair.flair), brain_mask=mask.outputs.out_mask,
        dseg=dseg.outputs.out_dseg, registration_cost=reg.final_metric,
        template=mask.outputs.template, skull_stripped=True, t1w_fixes=["a"], flair_fixes=["b"],
    )
    qc = json.loads(open(AnatomicalQC(**qc_inputs).run().outputs.out_file).read())
    assert qc["fixes"] == ["T1w: a", "FLAIR: b"] and qc["flair_coverage"] > 0.99
    assert set(qc) == {"registration_cost", "brain_mask_volume_ml", "snr_t1w", "snr_flair",
                       "template", "skull_stripped_input", "fixes", "flair_coverage"}
    assert qc["snr_t1w"] > 1 and 50 < qc["brain_mask_volume_ml"] < 3000

    # a FLAIR that covers only the top of the brain is refused, naming the FLAIR
    half = np.asanyarray(nib.load(flair_grid.fov_mask).dataobj).copy()
    half[:, :, : half.shape[2] * 2 // 3] = 0
    nib.save(nib.Nifti1Image(half, grid.affine), tmp_path / "partial_fov.nii.gz")
    qc_inputs["flair_fov"] = str(tmp_path / "partial_fov.nii.gz")
    message = r"FLAIR.nii.gz: the FLAIR covers only \d+% of the brain"
    with pytest.raises(BadDataError, match=message):
        AnatomicalQC(**qc_inputs).run()
