"""The output declarations, the all-or-nothing writer, the dataset files and the sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from demist_bids.derivatives import outputs
from demist_bids.derivatives.outputs import OUTPUTS, identify, output_path


@pytest.mark.parametrize("session", [None, "1"])
def test_every_declared_name_parses_back_to_its_output(session):
    names = set()
    for key, out in OUTPUTS.items():
        for path in (out.path("01", session), out.sidecar_path("01", session)):
            assert identify(path) == key, path
            assert outputs.subject_session(path) == ("01", session)
            names.add(path.name)
    assert len(names) == 2 * len(OUTPUTS)  # no two outputs share a name
    assert output_path("psr_model", "01").name == "sub-01_res-1mm_desc-synth_PSRmap.nii.gz"
    assert output_path("flair_to_t1w_xfm", "01", session).name.endswith(
        "from-FLAIR_to-T1w_mode-image_xfm.txt")
    assert identify("sub-01_space-MNI152NLin2009cAsym_desc-synth_PSRmap.nii.gz") is None


def test_dataset_files_hold_the_lookup_table_and_ignore_what_bids_cannot_name(tmp_path):
    import pandas as pd

    from demist_bids.derivatives.dataset import write_dataset_files

    write_dataset_files(tmp_path, tmp_path)
    table = pd.read_csv(tmp_path / "dseg.tsv", sep="\t")
    assert list(table.columns) == ["index", "name", "abbreviation"]
    assert dict(zip(table["abbreviation"], table["index"])) == {"GM": 1, "WM": 2, "CSF": 3}
    ignored = (tmp_path / ".bidsignore").read_text().split()
    assert "*_PSRmap.*" in ignored and "*_xfm.*" in ignored


def _image(path: Path, value: float) -> Path:
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.eye(4)), path)
    return path


def test_commit_writes_every_file_or_none(tmp_path):
    from demist_bids.derivatives.writer import OutputItem, anat_dir, commit_outputs

    items = [OutputItem("psr", _image(tmp_path / "psr.nii", 0.1), {"Units": "1"}),
             OutputItem("brain_mask", _image(tmp_path / "mask.nii.gz", 1), {})]
    out = tmp_path / "out"
    written = commit_outputs(out, "01", "a", items)
    assert [p.name for p in written] == ["sub-01_ses-a_desc-synth_PSRmap.nii.gz",
                                         "sub-01_ses-a_desc-brain_mask.nii.gz"]
    assert nib.load(written[0]).get_fdata().max() == pytest.approx(0.1)  # .nii compressed on copy
    assert json.loads(written[0].with_name("sub-01_ses-a_desc-synth_PSRmap.json").read_text()) == {
        "Units": "1"}

    broken = items + [OutputItem("dseg", tmp_path / "absent.nii.gz", {})]
    with pytest.raises(FileNotFoundError):
        commit_outputs(out, "02", None, broken)
    assert not anat_dir(out, "02", None).exists() or not any(anat_dir(out, "02", None).iterdir())


def test_full_disk_during_the_commit_is_74_and_changes_nothing(tmp_path, small_disk):
    from demist_bids.derivatives.writer import OutputItem, anat_dir, commit_outputs
    from demist_bids.exceptions import DemistIOError
    from tests.conftest import fill_disk

    out = small_disk / "out"
    commit_outputs(out, "01", None, [OutputItem("psr", _image(tmp_path / "old.nii.gz", 0.1))])
    before = {p: p.read_bytes() for p in anat_dir(out, "01", None).iterdir()}
    big = tmp_path / "big.nii"  # about 256 KB, compressed on copy: random values stay large
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 40), np.float32),
                             np.eye(4)), big)
    fill_disk(small_disk, leave=64 * 1024)
    with pytest.raises(DemistIOError, match="sub-01 into .*No space left on device"):
        commit_outputs(out, "01", None, [OutputItem("psr", big, {"Units": "1"})])
    assert {p: p.read_bytes() for p in anat_dir(out, "01", None).iterdir()} == before
    assert not list(out.rglob(".staging-*")) and not list(out.rglob(".*.part*"))


def test_psr_sidecar_copies_the_inputs_acquisition_metadata(tmp_path):
    from demist_bids.derivatives.sidecars import build_items, static_metadata

    common = {"MagneticFieldStrength": 3, "Manufacturer": "Siemens", "InstitutionName": "A"}
    t1w_meta = {**common, "ManufacturersModelName": "Prisma", "RepetitionTime": 2.3,
                "StationName": "one"}
    flair_meta = {**common, "RepetitionTime": 9.0, "InversionTime": 2.5, "StationName": "two"}
    t1w, flair = tmp_path / "sub-01_T1w.nii.gz", tmp_path / "sub-01_FLAIR.nii.gz"
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps(t1w_meta))
    (tmp_path / "sub-01_FLAIR.json").write_text(json.dumps(flair_meta))
    static = static_metadata(t1w=t1w, flair=flair, model_dir=tmp_path, model_sha256="0" * 64,
                             is_demo=False, card={"name": "m"})
    files = {key: tmp_path / f"{key}.nii.gz" for key in OUTPUTS}
    items = {i.key: i.metadata for i in build_items(files, qc={}, synthesis={}, static=static)}
    psr = items["psr"]
    assert psr["Sources"] == [str(t1w), str(flair)]
    assert {k: psr[k] for k in common} == common
    assert psr["ManufacturersModelName"] == "Prisma"  # given by one input only
    assert "StationName" not in psr  # the inputs disagree
    assert psr["InputAcquisition"] == {"T1w": {"RepetitionTime": 2.3},
                                       "FLAIR": {"RepetitionTime": 9.0, "InversionTime": 2.5}}
    assert psr["Units"] == "1" and "ratio" in psr["UnitsDescription"]
    assert items["psr_std"]["Units"] == "1" and "deviation" in items["psr_std"]["Description"]
    assert items["dseg"]["Labels"] == {"1": "GM", "2": "WM", "3": "CSF"}
    assert items["flair_preproc"]["Sources"][0] == str(flair)
    assert set(items) == set(OUTPUTS)
