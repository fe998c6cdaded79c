"""Template-space outputs are declared once (derivatives/outputs.py): names, parsing, sidecars."""

from __future__ import annotations

import pytest

from demist_bids.derivatives.outputs import (
    OUTPUTS, SPACE_OUTPUTS, bidsignore_patterns, declared, identify, in_space, subject_session)

TPL = "MNI152NLin2009cAsym"


@pytest.mark.parametrize("session", [None, "2"])
def test_names_are_built_and_parsed_back(session):
    names = {key: in_space(key, TPL, "2").path("01", session) for key in SPACE_OUTPUTS}
    prefix = "sub-01" + (f"_ses-{session}" if session else "")
    assert names["psr_space"].name == f"{prefix}_space-{TPL}_res-2_desc-synth_PSRmap.nii.gz"
    assert names["psr_std_space"].name == f"{prefix}_space-{TPL}_res-2_desc-std_PSRmap.nii.gz"
    assert names["brain_mask_space"].name == f"{prefix}_space-{TPL}_res-2_desc-brain_mask.nii.gz"
    assert names["t1w_to_template_xfm"].name == f"{prefix}_from-T1w_to-{TPL}_mode-image_xfm.h5"
    assert names["template_to_t1w_xfm"].name == f"{prefix}_from-{TPL}_to-T1w_mode-image_xfm.h5"
    for key, path in names.items():
        assert identify(path) == key and identify(path.with_name(
            path.name.split(".")[0] + ".json")) == key
        assert subject_session(path) == ("01", session)  # never a subject "01_space-..."
        assert declared(in_space(key, TPL, "2").key).path("01", session) == path
    # the native outputs keep their own keys; a space name without res- is none of ours
    assert identify(OUTPUTS["psr"].path("01")) == "psr"
    assert identify(OUTPUTS["flair_to_t1w_xfm"].path("01")) == "flair_to_t1w_xfm"
    assert identify(f"sub-01_space-{TPL}_desc-synth_PSRmap.nii.gz") is None


def test_maps_need_a_resolution_and_transforms_do_not():
    with pytest.raises(ValueError, match="resolution"):
        in_space("psr_space", TPL)
    assert in_space("t1w_to_template_xfm", TPL, "2").key == f"t1w_to_template_xfm@{TPL}"
    with pytest.raises(KeyError):
        declared("nonsense@MNI")
    assert {"*_PSRmap.*", "*_xfm.*"} <= set(bidsignore_patterns())


def test_sidecars_name_the_grid_and_the_registration(tmp_path):
    from demist_bids.derivatives.sidecars import build_items

    static = {"Sources": ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz",
                          "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"],
              "SoftwareVersion": "demist test", "Model": {"Name": "m", "IsDemo": False}}
    record = {"Template": TPL, "TemplateSource": "TemplateFlow", "BrainMaskDice": 0.97,
              "Resolutions": {"2": f"{TPL} grid res-2 (2x2x2 mm voxels)"}}
    keys = [in_space(k, TPL, "2").key for k in SPACE_OUTPUTS]
    files = {key: tmp_path / f"{i}.nii.gz" for i, key in enumerate(keys)}
    items = {i.key: i for i in build_items({"psr": tmp_path / "psr.nii.gz"}, qc={},
                                           synthesis={}, static=static, spaces=files,
                                           registrations={TPL: record})}
    psr = items[f"psr_space@{TPL}:res-2"].metadata
    assert psr["Units"] == "1" and psr["Resolution"] == record["Resolutions"]["2"]
    assert psr["TemplateRegistration"]["BrainMaskDice"] == 0.97
    assert "SpatialReference" not in psr and "SpatialReference" in items["psr"].metadata
    mask = items[f"brain_mask_space@{TPL}:res-2"].metadata
    assert mask["Type"] == "Brain" and mask["Sources"] == static["Sources"][:1]
    xfm = items[f"t1w_to_template_xfm@{TPL}"].metadata
    assert xfm["Template"] == TPL and "Resolution" not in xfm and "antsApplyTransforms" in \
        xfm["Description"]
