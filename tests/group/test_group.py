"""The group level on small output trees whose PSR values are known."""

from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from demist_bids.config import Config
from demist_bids.exceptions import MissingInputError
from demist_bids.cli.group import run_group
from demist_bids.preprocessing.tissues import GM, WM
from tests.group import cohort as toy
from tests.utils.damaged import header_only


def _config(c: toy.Cohort, **derivatives) -> Config:
    config = Config()
    config.execution.bids_dir = c.bids
    config.execution.output_dir = c.out
    config.execution.analysis_level = "group"
    config.execution.derivatives = derivatives
    return config


def _read(c: toy.Cohort) -> pd.DataFrame:
    return pd.read_csv(c.out / "group_PSR.tsv", sep="\t", na_values=["n/a"], keep_default_na=False)


OFFSETS = {"01": 0.0, "02": 0.004, "03": -0.003, "04": 0.002, "05": -0.001}


@pytest.fixture()
def ms_cohort(tmp_path):
    """Five subjects (three MS with lesion masks, two controls); sub-04's map is scaled x3."""
    groups = {"01": "MS", "02": "MS", "03": "control", "04": "MS", "05": "control"}
    c = toy.make_cohort(tmp_path, groups)
    lesions = tmp_path / "lesions"
    for sub, offset in OFFSETS.items():
        ms = groups[sub] == "MS"
        psr = toy.psr_map(offset, scale=3.0 if sub == "04" else 1.0, with_lesion=ms)
        c.add_result(sub, psr=psr, std=0.01 + 0.001 * int(sub))
        if ms:
            toy.save(
                lesions / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-consensus_mask.nii.gz",
                toy.lesion_mask(),
            )
    return c, lesions


def test_table_holds_known_values_and_five_runs_are_too_few_to_flag(ms_cohort):
    c, lesions = ms_cohort
    assert run_group(_config(c, lesions=lesions)) == 0
    table = _read(c).set_index("subject")
    assert list(_read(c).columns[:7]) == [
        "bids_name",
        "subject",
        "session",
        "status",
        "failure_reason",
        "outlier",
        "outlier_measures",
    ]
    assert table.loc[1, "bids_name"] == "sub-01_desc-synth_PSRmap"
    assert len(table) == 5 and set(table["status"]) == {"ok"}
    # Exact tissue medians: WM core (lesion voxels are WM too but few), GM shell, no spread in GM.
    assert table.loc[3, "psr_median_wm"] == pytest.approx(toy.WM_PSR - 0.003)
    assert table.loc[2, "psr_median_gm"] == pytest.approx(toy.GM_PSR + 0.004)
    assert table.loc[2, "psr_iqr_gm"] == pytest.approx(0, abs=1e-7)
    assert table.loc[1, "psr_median_lesion"] == pytest.approx(toy.LESION_PSR)
    assert table.loc[1, "psr_median_nawm"] == pytest.approx(toy.WM_PSR)
    assert table.loc[1, "lesion_volume_ml"] == pytest.approx(0.027)
    assert table.loc[1, "lesion_auc_combined"] == 1.0 and table.loc[1, "lesion_auc_proximal"] == 1.0
    assert math.isnan(table.loc[3, "psr_median_lesion"])  # controls have no lesion mask
    assert table.loc[2, "uncertainty_mean"] == pytest.approx(0.012)
    assert table.loc[1, "qc_registration_cost"] == 0.2 and table.loc[1, "qc_fixes"] == "reoriented"
    assert table.loc[1, "runtime_s"] == 12.5 and table.loc[1, "sampler_steps"] == 4
    assert table.loc[1, "model_name"] == "demist-demo"
    # participants.tsv columns are carried
    assert table.loc[3, "group"] == "control" and table.loc[5, "age"] == 34
    # Five runs are too few to judge one by the others: nobody is flagged, the table says why.
    assert table["outlier"].isna().all()
    assert set(table["outlier_measures"]) == {"too few runs to flag"}
    html = (c.out / "group_PSR.html").read_text()
    assert 'href="sub-04.html"' in html and "Too few runs to flag" in html
    assert 'class="strip ok flagged"' not in html


def test_corrupted_subject_is_the_only_outlier_among_nine(tmp_path):
    c = toy.make_cohort(tmp_path)
    offsets = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003, -0.002, 0.001, -0.004]
    for number, offset in enumerate(offsets, start=1):
        c.add_result(f"{number:02d}", psr=toy.psr_map(offset, scale=3.0 if number == 4 else 1.0),
                     std=0.01 + 0.001 * number)
    assert run_group(_config(c)) == 0
    table = _read(c).set_index("subject")
    expected = ["True" if s == 4 else "False" for s in table.index]
    assert table["outlier"].astype(str).tolist() == expected
    assert "psr_median_wm" in table.loc[4, "outlier_measures"]
    assert "psr_median_brain" in table.loc[4, "outlier_measures"]
    html = (c.out / "group_PSR.html").read_text()
    assert "psr_median_wm" in html and "Too few runs" not in html


def test_group_level_on_the_derivatives_alone(ms_cohort, tmp_path):
    from demist_bids.cli.run import run

    c, _ = ms_cohort
    shutil.rmtree(c.bids)  # the raw dataset is gone: only the derivatives are left
    code = run([str(c.out), str(c.out), "group", "-w", str(tmp_path / "w")])
    assert code == 0
    table = _read(c)
    assert len(table) == 5 and set(table["status"]) == {"ok"}
    assert "group" not in table.columns  # participants.tsv was the raw dataset's
    code = run([str(tmp_path / "no_raw_here"), str(c.out), "group", "-w", str(tmp_path / "w")])
    assert code == 0 and len(_read(c)) == 5


def test_measured_maps_give_agreement_side_by_side(ms_cohort, tmp_path):
    c, lesions = ms_cohort
    measured = tmp_path / "qmt"
    for sub in ("01", "02"):
        psr = toy.psr_map(OFFSETS[sub] + 0.01, with_lesion=True)
        toy.save(measured / f"sub-{sub}" / "anat" / f"sub-{sub}_PSRmap.nii.gz", psr)
    config = _config(c, lesions=lesions)
    config.train.psr_derivatives = measured
    run_group(config)
    table = _read(c).set_index("subject")
    assert table.loc[1, "agree_mse"] == pytest.approx(1e-4, rel=1e-4)
    assert table.loc[1, "agree_l1"] == pytest.approx(0.01, rel=1e-4)
    assert table.loc[1, "agree_ncc"] == pytest.approx(1.0)
    assert table.loc[1, "agree_psnr"] == pytest.approx(10 * math.log10(0.3**2 / 1e-4), rel=1e-4)
    assert table.loc[1, "ba_wm_bias"] == pytest.approx(-0.01, rel=1e-3)  # synthesized - measured
    assert table.loc[1, "psr_median_wm_measured"] == pytest.approx(toy.WM_PSR + 0.01)
    assert table.loc[1, "lesion_auc_combined_measured"] == 1.0
    assert math.isnan(table.loc[3, "agree_psnr"])  # no measured map for sub-03
    html = (c.out / "group_PSR.html").read_text()
    assert 'id="agreement"' in html and "Bland-Altman" in html


def test_empty_output_is_missing_input(tmp_path):
    c = toy.make_cohort(tmp_path)
    c.add_input("01")
    with pytest.raises(MissingInputError) as err:
        run_group(_config(c))
    assert err.value.exit_code == 66
    assert not (c.out / "group_PSR.tsv").exists()


def test_sessions_and_missing_session(tmp_path):
    c = toy.make_cohort(tmp_path)
    for sub in ("01", "02"):
        for ses in ("1", "2"):
            if (sub, ses) != ("02", "2"):
                c.add_result(sub, ses, psr=toy.psr_map(0.001 * int(ses)))
    c.add_input("02", "2")
    run_group(_config(c))
    table = _read(c)
    assert list(table["bids_name"]) == [
        "sub-01_ses-1_desc-synth_PSRmap",
        "sub-01_ses-2_desc-synth_PSRmap",
        "sub-02_ses-1_desc-synth_PSRmap",
        "sub-02_ses-2_desc-synth_PSRmap",
    ]
    assert list(table["status"]) == ["ok", "ok", "ok", "missing"]
    assert table.loc[1, "psr_median_wm"] == pytest.approx(toy.WM_PSR + 0.002)
    assert "no participant outputs" in table.loc[3, "failure_reason"]


def test_single_subject(tmp_path):
    c = toy.make_cohort(tmp_path)
    c.add_result("solo", std=None)
    assert run_group(_config(c)) == 0
    table = _read(c)
    assert len(table) == 1 and math.isnan(table.loc[0, "outlier"])  # n/a: not screened
    assert table.loc[0, "outlier_measures"] == "too few runs to flag"
    assert "uncertainty_mean" not in table.columns
    assert (c.out / "group_PSR.html").stat().st_size > 1000


def test_crash_file_reason_and_missing_flair(tmp_path):
    c = toy.make_cohort(tmp_path)
    for sub in ("01", "02", "03"):
        c.add_result(sub)
    c.add_input("04")
    c.add_crash("04", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    c.add_input("05", flair=False)
    run_group(_config(c))
    table = _read(c).set_index("bids_name")
    crashed = table.loc["sub-04_desc-synth_PSRmap"]
    assert crashed["status"] == "failed"
    assert (
        crashed["failure_reason"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert (
        table.loc["sub-05_desc-synth_PSRmap", "failure_reason"]
        == "no FLAIR image in the input dataset"
    )
    html = (c.out / "group_PSR.html").read_text()
    assert "CUDA out of memory" in html and "demist_wf.synthesis" in html


def test_old_crash_file_does_not_fail_a_finished_rerun(tmp_path):
    c = toy.make_cohort(tmp_path)
    crash = c.add_crash("01", "ValueError: stale")
    import os

    os.utime(crash, (1_000_000, 1_000_000))
    c.add_result("01")
    run_group(_config(c))
    assert _read(c).loc[0, "status"] == "ok"


def test_tissue_from_derivatives(tmp_path):
    c = toy.make_cohort(tmp_path)
    c.add_result("01")
    smriprep = tmp_path / "smriprep"
    dseg = toy.tissue()
    dseg[dseg == GM] = WM  # this segmentation calls the GM shell white matter too
    toy.save(smriprep / "sub-01" / "anat" / "sub-01_dseg.nii.gz", dseg)
    run_group(_config(c, smriprep=smriprep))
    row = _read(c).loc[0]
    assert row["tissue_source"] == "sub-01_dseg.nii.gz"
    assert math.isnan(row["psr_median_gm"])
    # The GM shell outnumbers the WM core, so this WM's median is the GM value, and it spreads.
    assert row["psr_median_wm"] == pytest.approx(toy.GM_PSR)
    assert row["psr_iqr_wm"] == pytest.approx(toy.WM_PSR - toy.GM_PSR)


def test_report_is_self_contained(ms_cohort):
    c, lesions = ms_cohort
    run_group(_config(c, lesions=lesions))
    html = (c.out / "group_PSR.html").read_text()
    assert not re.search(r"<link\b|<script[^>]+src=|@import|url\(\s*['\"]?http", html)
    sources = re.findall(r"""\ssrc=["']([^"']+)""", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    links = set(re.findall(r"""\shref=["']([^"']+)""", html))
    assert links and all(re.fullmatch(r"#\w+|sub-\w+\.html", link) for link in links)


def test_participant_label_selects_subjects(ms_cohort):
    c, lesions = ms_cohort
    config = _config(c)
    config.execution.participant_label = ["sub-01", "02"]
    run_group(config)
    assert list(_read(c)["subject"]) == [1, 2]


def test_through_the_command_line(ms_cohort, tmp_path):
    from demist_bids.cli.run import run

    c, lesions = ms_cohort
    shutil.rmtree(c.out / "sub-04")
    code = run(
        [
            str(c.bids),
            str(c.out),
            "group",
            "-d",
            f"lesions={lesions}",
            "-w",
            str(tmp_path / "w"),
            "--skip-bids-validation",
        ]
    )
    assert code == 0
    table = _read(c)
    assert table.set_index("subject").loc[4, "status"] == "missing"
    assert np.isfinite(table.set_index("subject").loc[1, "lesion_auc_combined"])


def test_tissue_labels_from_the_dataset_lookup_table(tmp_path):
    from demist_bids.group.measures import tissue_labels

    root = tmp_path / "seg"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text("{}")
    dseg = root / "sub-01" / "anat" / "sub-01_dseg.nii.gz"
    assert tissue_labels(dseg) == {"gm": 1, "wm": 2, "csf": 3}  # BIDS common order by default
    (root / "dseg.tsv").write_text(
        "index\tname\tabbreviation\n1\tcerebrospinal fluid\tCSF\n2\tgrey matter\tGM\n3\twhite matter\tWM\n"
    )
    assert tissue_labels(dseg) == {"csf": 1, "gm": 2, "wm": 3}


def test_dseg_of_an_older_demist_is_read_from_its_sidecar(tmp_path):
    """demist once wrote 1 CSF, 2 GM, 3 WM (and said so in the sidecar): those outputs stay right
    next to a root dseg.tsv in the new order."""
    import json

    from demist_bids.derivatives.outputs import DSEG_TSV, dseg_table
    from demist_bids.group.measures import tissue_labels

    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (tmp_path / "dataset_description.json").write_text("{}")
    (tmp_path / DSEG_TSV).write_text(dseg_table())
    dseg = anat / "sub-01_dseg.nii.gz"
    assert tissue_labels(dseg) == {"gm": 1, "wm": 2, "csf": 3}
    (anat / "sub-01_dseg.json").write_text(json.dumps({"Labels": {"1": "CSF", "2": "GM", "3": "WM"}}))
    assert tissue_labels(dseg) == {"csf": 1, "gm": 2, "wm": 3}


def test_model_grid_copy_is_not_a_subject(tmp_path):
    """``--output-spaces model`` adds ``sub-X_res-1mm_desc-synth_PSRmap``: one row per scan still."""
    c = toy.make_cohort(tmp_path)
    path = c.add_result("01")
    c.add_result("02", "1")
    for psr in (path, c.out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_desc-synth_PSRmap.nii.gz"):
        shutil.copy(psr, psr.with_name(psr.name.replace("_desc-synth", "_res-1mm_desc-synth")))
    assert run_group(_config(c)) == 0
    table = _read(c)
    assert list(table["bids_name"]) == ["sub-01_desc-synth_PSRmap", "sub-02_ses-1_desc-synth_PSRmap"]
    assert set(table["status"]) == {"ok"}
    assert not table["bids_name"].str.contains("res-1mm").any()
    assert not table["subject"].astype(str).str.contains("res").any()


def test_tissue_labels_of_smriprep(tmp_path):
    from demist_bids.group.measures import tissue_labels

    root = tmp_path / "derivatives" / "anat-preproc"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"GeneratedBy": [{"Name": "sMRIPrep"}]}')
    assert tissue_labels(root / "sub-01" / "anat" / "sub-01_dseg.nii.gz") == {
        "gm": 1,
        "wm": 2,
        "csf": 3,
    }


def test_crash_naming_a_session_fails_only_that_session(tmp_path):
    c = toy.make_cohort(tmp_path)
    c.add_result("01", "1")
    c.add_input("01", "2")
    c.add_crash(
        "01", "ValueError: FLAIR is empty", node="demist_wf.single_subject_01_ses_2_wf.synthesis"
    )
    run_group(_config(c))
    table = _read(c)
    assert list(table["status"]) == ["ok", "failed"]
    assert table.loc[1, "failure_reason"] == "ValueError: FLAIR is empty"


def test_unreadable_output_is_a_failure_not_a_crash(tmp_path):
    c = toy.make_cohort(tmp_path)
    c.add_result("01")
    c.add_result("02").write_bytes(b"not a nifti")
    assert run_group(_config(c)) == 65  # the others are still measured and reported
    table = _read(c).set_index("subject")
    assert table.loc[1, "status"] == "ok"
    assert table.loc[2, "status"] == "failed"
    assert table.loc[2, "failure_reason"].startswith("unreadable outputs")
    assert "unreadable outputs" in (c.out / "group_PSR.html").read_text()


@pytest.mark.parametrize("damage", ["truncated", "2000-cubed"])
def test_damaged_output_is_65_naming_it_before_reading_voxels(tmp_path, damage):
    c = toy.make_cohort(tmp_path)
    c.add_result("01")
    psr = c.add_result("02")
    if damage == "truncated":
        raw = psr.read_bytes()
        psr.write_bytes(raw[: len(raw) // 2])
    else:
        header_only(psr)  # a header promising 2000^3 float32 over a few bytes
    assert run_group(_config(c)) == 65
    table = _read(c).set_index("subject")
    assert table.loc[1, "status"] == "ok"
    assert table.loc[2, "failure_reason"].startswith(f"unreadable outputs: {psr}: ")
