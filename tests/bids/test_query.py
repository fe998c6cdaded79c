"""pybids discovery of T1w/FLAIR on the layout cases, and the documented selection rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from demist_bids.bids.query import collect_inputs
from demist_bids.exceptions import NothingSelectedError

SK = "bids_examples_skeletons"


def test_openms_subjects_and_sessions(shared_data, tmp_path):
    found, missing = collect_inputs(shared_data / "openms_subset", work_dir=tmp_path)
    assert [i.bids_name for i in found] == ["sub-cs07", "sub-long01_ses-1", "sub-long01_ses-2"]
    assert missing == []
    cs07 = found[0]
    assert cs07.t1w.name == "sub-cs07_T1w.nii.gz" and cs07.flair.name == "sub-cs07_FLAIR.nii.gz"
    # derivatives/lesions inside the dataset is picked up by default
    assert cs07.lesion_mask.name == "sub-cs07_desc-consensus_mask.nii.gz"
    assert found[1].lesion_mask is None


def test_acq_mprage_t1w_is_found(shared_data, tmp_path):
    found, missing = collect_inputs(shared_data / SK / "genetics_ukbb", work_dir=tmp_path)
    assert len(found) == 14 and not missing
    assert all("acq-MPRAGE" in i.t1w.name for i in found)


def test_extra_entities_rule_is_deterministic_and_overridable(shared_data, tmp_path):
    ds = shared_data / SK / "ds004332"
    first, missing = collect_inputs(ds, work_dir=tmp_path)
    again, _ = collect_inputs(ds, work_dir=tmp_path)
    assert first == again
    assert [m.message for m in missing] == ["sub-01 has no FLAIR image; it is skipped"]
    (item,) = first
    assert item.t1w.name == "sub-02_task-nodding_acq-mpragePMCoff_rec-wore_T1w.nii"
    chosen, _ = collect_inputs(
        ds, work_dir=tmp_path,
        bids_filter={"t1w": {"acquisition": "t1tirmPMCon", "reconstruction": "wre", "task": "nodding"},
                     "flair": {"acquisition": "flairPMCon", "reconstruction": "wre"}},
    )
    assert chosen[0].t1w.name == "sub-02_task-nodding_acq-t1tirmPMCon_rec-wre_T1w.nii"
    assert chosen[0].flair.name == "sub-02_task-nodding_acq-flairPMCon_rec-wre_FLAIR.nii"


def test_highest_run_wins(tmp_path):
    import json

    ds = tmp_path / "ds"
    anat = ds / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    for name in ("sub-01_run-1_T1w", "sub-01_run-2_T1w", "sub-01_FLAIR"):
        (anat / f"{name}.nii.gz").write_bytes(b"")
    (found,), _ = collect_inputs(ds)
    assert found.t1w.name == "sub-01_run-2_T1w.nii.gz"


def test_no_flair_anywhere(shared_data, tmp_path):
    found, missing = collect_inputs(shared_data / SK / "ds114", work_dir=tmp_path)
    assert found == [] and len(missing) == 20
    assert {m.suffix for m in missing} == {"FLAIR"}


def test_unknown_label_raises(shared_data, tmp_path):
    with pytest.raises(NothingSelectedError, match="sub-99"):
        collect_inputs(shared_data / "openms_subset", participant_label=["cs07", "99"])


def test_index_is_cached_in_work_dir(shared_data, tmp_path):
    collect_inputs(shared_data / "openms_subset", work_dir=tmp_path)
    dbs = list((tmp_path / "bids_db").iterdir())
    assert len(dbs) == 1 and any(dbs[0].iterdir())
    stamp = {p: p.stat().st_mtime_ns for p in dbs[0].rglob("*") if p.is_file()}
    collect_inputs(shared_data / "openms_subset", work_dir=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in dbs[0].rglob("*") if p.is_file()} == stamp


def test_smriprep_mask_and_psr_derivatives(tmp_path):
    import json

    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    for name in ("sub-01_T1w", "sub-01_FLAIR"):
        (ds / "sub-01" / "anat" / f"{name}.nii.gz").write_bytes(b"")
    desc = {"Name": "d", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "x"}]}
    smri = tmp_path / "smriprep"
    (smri / "sub-01" / "anat").mkdir(parents=True)
    (smri / "dataset_description.json").write_text(json.dumps(desc))
    (smri / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz").write_bytes(b"")
    qmt = ds / "derivatives" / "qmt"
    (qmt / "sub-01" / "anat").mkdir(parents=True)
    (qmt / "dataset_description.json").write_text(json.dumps(desc))
    (qmt / "sub-01" / "anat" / "sub-01_PSRmap.nii.gz").write_bytes(b"")
    (item,), _ = collect_inputs(ds, derivatives={"smriprep": smri})
    assert item.brain_mask == smri / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz"
    assert item.psr == qmt / "sub-01" / "anat" / "sub-01_PSRmap.nii.gz"


def test_demist_outputs_are_never_taken_for_measured_psr(tmp_path):
    import json

    from demist_bids.bids.query import default_psr_derivatives

    ds = tmp_path / "ds"
    desc = json.dumps({"Name": "d", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                       "GeneratedBy": [{"Name": "x"}]})
    for name, fname in (("demist", "sub-01_desc-synth_PSRmap.nii.gz"), ("qmt", "sub-01_PSRmap.nii.gz")):
        (ds / "derivatives" / name / "sub-01" / "anat").mkdir(parents=True)
        (ds / "derivatives" / name / "dataset_description.json").write_text(desc)
        (ds / "derivatives" / name / "sub-01" / "anat" / fname).write_bytes(b"")
    # "demist" sorts before "qmt": its synthesized maps must still be skipped
    assert default_psr_derivatives(ds) == ds / "derivatives" / "qmt"
    assert default_psr_derivatives(ds, exclude=ds / "derivatives" / "qmt") is None
