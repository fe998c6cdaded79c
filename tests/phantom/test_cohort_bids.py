"""The phantom is a valid BIDS dataset that pybids and the BIDS validator accept."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest


def test_returned_scans_point_at_existing_files(cohort):
    root, scans = cohort
    assert len(scans) == 6
    assert {(s.subject, s.session) for s in scans} == {
        (sub, ses) for sub in ("01", "02", "03") for ses in ("01", "02")
    }
    for scan in scans:
        for path in (
            scan.t1w,
            scan.flair,
            scan.psr,
            scan.lesion_mask,
            scan.brain_mask,
            scan.dseg,
            scan.transform,
        ):
            assert path.is_file() and root in path.parents
    assert not list(root.parent.glob(".bids.*")), "the build folder was not cleaned up"


def test_participants_table_matches_groups(cohort):
    root, scans = cohort
    with open(root / "participants.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["participant_id"] for row in rows] == ["sub-01", "sub-02", "sub-03"]
    groups = {row["participant_id"][4:]: row["group"] for row in rows}
    assert sorted(groups.values()) == ["MS", "MS", "control"]
    for row in rows:
        assert row["sex"] in {"F", "M"} and 18 <= int(row["age"]) <= 70
    for scan in scans:
        assert scan.group == groups[scan.subject]
        assert (scan.n_lesions > 0) == (scan.group == "MS")
        assert (scan.lesion_volume_ml > 0) == (scan.group == "MS")
    assert set(json.loads((root / "participants.json").read_text())) >= {"group", "age", "sex"}


def test_geometry_t1w_ras_1mm_flair_lps_thick_slices(cohort):
    _, scans = cohort
    t1w, flair = nib.load(scans[0].t1w), nib.load(scans[0].flair)
    assert nib.aff2axcodes(t1w.affine) == ("R", "A", "S")
    assert np.allclose(t1w.header.get_zooms(), 1.0)
    assert nib.aff2axcodes(flair.affine) == ("L", "P", "S")
    assert flair.header.get_zooms()[2] > 1.0 and flair.shape != t1w.shape
    for path in (scans[0].psr, scans[0].lesion_mask, scans[0].brain_mask, scans[0].dseg):
        image = nib.load(path)
        assert image.shape == t1w.shape and np.allclose(image.affine, t1w.affine)
    assert np.issubdtype(t1w.get_data_dtype(), np.integer)


def test_sidecars_and_derivative_descriptions(cohort):
    root, scans = cohort
    psr_meta = json.loads(
        scans[0].psr.with_name(scans[0].psr.name.replace(".nii.gz", ".json")).read_text()
    )
    assert psr_meta["Units"] == "1"
    assert "pool-size ratio" in psr_meta["Description"]
    flair_meta = json.loads(
        scans[0].flair.with_name(scans[0].flair.name.replace(".nii.gz", ".json")).read_text()
    )
    assert flair_meta["SliceThickness"] == nib.load(scans[0].flair).header.get_zooms()[2]
    for name in ("qmt", "lesions", "phantom"):
        description = json.loads(
            (root / "derivatives" / name / "dataset_description.json").read_text()
        )
        assert description["DatasetType"] == "derivative"
        assert description["GeneratedBy"][0]["Name"] == "demist-phantom"
    transform = json.loads(scans[0].transform.read_text())
    assert np.allclose(transform["Matrix"], scans[0].flair_to_t1w)
    assert "world" in transform["Convention"]


@pytest.mark.skipif(
    shutil.which("bids-validator-deno") is None, reason="bids-validator-deno missing"
)
def test_bids_validator_accepts_raw_and_every_derivative(cohort):
    root, _ = cohort
    for dataset in (root, *(root / "derivatives").iterdir()):
        result = subprocess.run(
            ["bids-validator-deno", "--ignoreWarnings", str(dataset)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{dataset}:\n{result.stdout[-3000:]}"


def test_pybids_finds_psr_maps_as_derivatives(cohort):
    from bids import BIDSLayout

    root, scans = cohort
    layout = BIDSLayout(root, derivatives=True)
    found = layout.get(suffix="PSRmap", extension=".nii.gz")
    assert sorted(f.path for f in found) == sorted(str(s.psr) for s in scans)
    assert {f.entities["subject"] for f in found} == {"01", "02", "03"}
    assert len(layout.get(suffix="FLAIR", extension=".nii.gz")) == 6
    assert len(layout.get(suffix="mask", desc="lesion", extension=".nii.gz")) == 6
