"""The participant level end to end on a small phantom cohort with a tiny random model.

Real preprocessing (Nipype + SimpleITK), the real sampler and the real
validator on the outputs; the model is tiny and untrained (its values are not
checked here, only that they are produced, placed, described and reproducible).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest



@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from demist_bids.phantom import generate_cohort

    root = tmp_path_factory.mktemp("cohort") / "bids"
    generate_cohort(root, subjects=2, seed=3, scale=0.45, control_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from demist_bids.models.demist import build_model
    from demist_bids.models.io import save_model
    from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(sampling={"sampler": "ddim", "steps": 3}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny",
                      card={"name": "tiny-test", "summary": "random weights for tests"})


def _digest(out: Path) -> dict[str, str]:
    """Checksums of every output file; sidecars without their wall-clock runtime."""
    digests = {}
    for path in sorted(out.rglob("*")):
        if not (path.is_file() and "anat" in path.parts):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            meta = json.loads(data)
            meta.pop("RuntimeSeconds", None)
            data = json.dumps(meta, sort_keys=True).encode()
        digests[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return digests


def _command(cohort, out, work, model, *extra) -> list[str]:
    return [sys.executable, "-m", "demist_bids", str(cohort), str(out), "participant",
            "--model", str(model), "-w", str(work), "--nprocs", "2", "--omp-nthreads", "1",
            "--samples", "2", "--seed", "5", *map(str, extra)]


def _participant(cohort, out, work, model, *extra) -> int:
    """Run the participant level as users do: a fresh process each time."""
    return subprocess.run(_command(cohort, out, work, model, *extra), capture_output=True).returncode


@pytest.fixture(scope="module")
def first_run(cohort, tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    out, work = base / "out", base / "work"
    code = _participant(cohort, out, work, tiny_model, "--output-spaces", "model")
    return code, out, work


@pytest.mark.slow
def test_outputs_are_complete_and_described(first_run, cohort):
    code, out, _ = first_run
    assert code == 0
    for sub in ("01", "02"):
        anat = out / f"sub-{sub}" / "anat"
        psr = nb.load(anat / f"sub-{sub}_desc-synth_PSRmap.nii.gz")
        t1w = nb.load(cohort / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
        assert psr.shape == t1w.shape and np.allclose(psr.affine, t1w.affine, atol=1e-4)
        assert np.isfinite(psr.get_fdata()).all()
        for name in ("desc-std_PSRmap", "res-1mm_desc-synth_PSRmap", "desc-brain_mask", "dseg",
                     "desc-preproc_T1w", "desc-preproc_FLAIR"):
            assert (anat / f"sub-{sub}_{name}.nii.gz").is_file(), name
            assert (anat / f"sub-{sub}_{name}.json").is_file(), name
        for name in ("desc-preproc_T1w", "desc-preproc_FLAIR", "dseg"):
            img = nb.load(anat / f"sub-{sub}_{name}.nii.gz")
            assert img.shape == t1w.shape and np.allclose(img.affine, t1w.affine, atol=1e-4)
        dseg = np.asanyarray(nb.load(anat / f"sub-{sub}_dseg.nii.gz").dataobj)
        t1w_data = t1w.get_fdata()
        gm, wm, csf = (np.median(t1w_data[dseg == label]) for label in (1, 2, 3))
        assert csf < gm < wm  # BIDS common order: 1 GM, 2 WM, 3 CSF
        xfm = anat / f"sub-{sub}_from-FLAIR_to-T1w_mode-image_xfm.txt"
        assert "AffineTransform_double_3_3" in xfm.read_text()
        assert (anat / f"sub-{sub}_from-FLAIR_to-T1w_mode-image_xfm.json").is_file()
        meta = json.loads((anat / f"sub-{sub}_desc-synth_PSRmap.json").read_text())
        assert meta["MagneticFieldStrength"] == 3 and meta["Manufacturer"] == "demist-phantom"
        assert meta["Units"] == "1" and meta["UnitsDescription"]
        assert meta["Sources"] == [f"bids:raw:sub-{sub}/anat/sub-{sub}_T1w.nii.gz",
                                   f"bids:raw:sub-{sub}/anat/sub-{sub}_FLAIR.nii.gz"]
        assert meta["Sampler"]["Samples"] == 2 and meta["Sampler"]["Seed"] == 5
        assert meta["Sampler"]["Precision"] in ("float32", "bfloat16-autocast")
        assert 0 < meta["Sampler"]["Start"] <= 1
        assert len(meta["Model"]["SHA256"]) == 64 and meta["Model"]["IsDemo"] is False
        assert {"registration_cost", "brain_mask_volume_ml"} <= set(meta["QC"])
        assert "psr_median_lesion" in meta["LesionValues"]
        report = (out / f"sub-{sub}.html").read_text()
        assert "<svg" in report and "No errors to report" in report
        assert len(list((out / f"sub-{sub}" / "figures").glob("*.svg"))) == 4
    assert (out / "dseg.tsv").read_text().splitlines()[0] == "index\tname\tabbreviation"
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "DEMIST" in citation and "N4" in citation
    assert "missing bibliography" not in citation  # every @key is in boilerplate.bib
    assert "@inproceedings{ldm," in (out / "logs" / "CITATION.bib").read_text()
    assert not list(out.rglob(".staging-*")) and not list(out.rglob("*.part*"))


def test_output_dataset_passes_the_bids_validator(first_run):
    _, out, _ = first_run
    proc = subprocess.run(["bids-validator-deno", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.slow
def test_rerun_reuses_cache_and_is_identical(first_run, cohort, tiny_model):
    code, out, work = first_run
    before = _digest(out)
    proc = subprocess.run(_command(cohort, out, work, tiny_model, "--output-spaces", "model"),
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert "Executing" not in proc.stdout + proc.stderr  # every node came from the cache
    assert _digest(out) == before


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(first_run, cohort, tiny_model, tmp_path):
    _, reference, _ = first_run
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = _command(cohort, out, work, tiny_model, "--output-spaces", "model")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    # kill once preprocessing of some subject is under way but before anything is committed
    while time.monotonic() < deadline and not list(work.rglob("n4_t1w/result_*.pklz")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(out.rglob("*_PSRmap.nii.gz")), "killed too late to test resumption"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert _digest(out) == _digest(reference)
    assert not list(out.rglob(".staging-*"))


@pytest.mark.slow
def test_subject_without_flair_is_66_and_others_run(cohort, tiny_model, tmp_path):
    partial = tmp_path / "bids"
    shutil.copytree(cohort, partial)
    (partial / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz").unlink()
    (partial / "sub-02" / "anat" / "sub-02_FLAIR.json").unlink()
    out = tmp_path / "out"
    code = _participant(partial, out, tmp_path / "work", tiny_model, "--skip-bids-validation")
    assert code == 66
    assert (out / "sub-01" / "anat" / "sub-01_desc-synth_PSRmap.nii.gz").is_file()
    assert not (out / "sub-02").exists()


@pytest.mark.slow
def test_flair_outside_the_t1w_is_65_naming_the_file(cohort, tiny_model, tmp_path):
    broken = tmp_path / "bids"
    shutil.copytree(cohort, broken)
    flair = broken / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"
    img = nb.load(flair)
    affine = img.affine.copy()
    affine[:3, 3] += 400.0  # a FLAIR 40 cm away: it covers none of the T1w
    nb.Nifti1Image(np.asanyarray(img.dataobj), affine, img.header).to_filename(flair)
    out = tmp_path / "out"
    proc = subprocess.run(_command(broken, out, tmp_path / "work", tiny_model,
                                   "--skip-bids-validation"), capture_output=True, text=True)
    assert proc.returncode == 65
    assert f"{flair}: its field of view covers only 0%" in proc.stderr
    assert (out / "sub-01" / "anat" / "sub-01_desc-synth_PSRmap.nii.gz").is_file()
    assert not (out / "sub-02" / "anat").exists()
    assert "sub-02_FLAIR.nii.gz" in (out / "sub-02.html").read_text()


@pytest.mark.slow
def test_crashing_subject_leaves_crash_file_report_and_nothing_half_written(
    cohort, tiny_model, tmp_path
):
    # sub-02 gets an empty brain mask from "another pipeline": its workflow must crash.
    smriprep = tmp_path / "smriprep"
    anat = smriprep / "sub-02" / "anat"
    anat.mkdir(parents=True)
    (smriprep / "dataset_description.json").write_text(json.dumps({
        "Name": "smriprep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "smriprep"}]}))
    t1w = nb.load(cohort / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    nb.Nifti1Image(np.zeros(t1w.shape, np.uint8), t1w.affine).to_filename(
        anat / "sub-02_desc-brain_mask.nii.gz")
    out = tmp_path / "out"
    code = _participant(cohort, out, tmp_path / "work", tiny_model, "-d", f"smriprep={smriprep}")
    assert code == 1
    assert (out / "sub-01" / "anat" / "sub-01_desc-synth_PSRmap.nii.gz").is_file()
    assert not (out / "sub-02" / "anat").exists() or not any((out / "sub-02" / "anat").iterdir())
    crashes = list((out / "sub-02" / "log").rglob("crash-*.txt"))
    assert crashes
    report = (out / "sub-02.html").read_text()
    assert "crash-" in report and "No errors to report" not in report
    assert not list(out.rglob("*.part*")) and not list(out.rglob(".staging-*"))


@pytest.mark.slow
def test_parallel_runs_share_one_output_directory(tiny_model, tmp_path):
    """Four subjects, four runs at once into one output directory, as a SLURM array does."""
    import tomllib

    from demist_bids.derivatives.dataset import BIDSIGNORE
    from demist_bids.derivatives.outputs import dseg_table
    from demist_bids.phantom import generate_cohort

    cohort = tmp_path / "bids"
    generate_cohort(cohort, subjects=4, seed=3, scale=0.45, control_fraction=0.0)
    subjects = ("01", "02", "03", "04")
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(_command(cohort, out, tmp_path / f"work{sub}", tiny_model,
                                  "--participant-label", sub, "--samples", "1"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for sub in subjects
    ]
    assert [p.wait() for p in procs] == [0] * 4
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "demist"
    assert (out / ".bidsignore").read_text().splitlines() == BIDSIGNORE  # once each, whole
    assert (out / "dseg.tsv").read_text() == dseg_table()
    logs = out / "logs"
    configs = [tomllib.loads(p.read_text()) for p in logs.glob("config-*.toml")]
    assert sorted(c["execution"]["participant_label"][0] for c in configs) == list(subjects)
    run_logs = list(logs.glob("demist-participant-*.log"))
    assert len(run_logs) == 4
    assert all("participant workflow finished" in p.read_text() for p in run_logs)
    citation = (logs / "CITATION.md").read_text()
    assert citation.startswith("# Methods and citations") and citation.endswith("\n")
    assert "DEMIST" in citation and "missing bibliography" not in citation
    assert "@inproceedings{ldm," in (logs / "CITATION.bib").read_text()
    for sub in subjects:
        assert (out / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-synth_PSRmap.nii.gz").is_file()
        assert "No errors to report" in (out / f"sub-{sub}.html").read_text()
    assert not list(out.rglob(".staging-*")) and not list(out.rglob(".*.part*"))
    proc = subprocess.run(["bids-validator-deno", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_boilerplate_only_writes_just_the_citation(cohort, tiny_model, tmp_path):
    out = tmp_path / "out"
    assert _participant(cohort, out, tmp_path / "work", tiny_model, "--boilerplate-only") == 0
    assert (out / "logs" / "CITATION.md").is_file()
    assert not list(out.glob("sub-*"))
