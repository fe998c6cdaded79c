"""Template-space outputs end to end: one participant run with ``--output-spaces``.

A one-subject phantom cohort, a tiny random model, and the template nilearn
ships (``MNI152NLin2009aSym``; this machine's TemplateFlow has no files): the
maps and the mask on the template grid, both transforms as HDF5 that
SimpleITK and nitransforms read back, sidecars, the reportlet and the validator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.workflows.test_participant import tiny_model  # noqa: F401 - a shared fixture

SPACE = "MNI152NLin2009aSym"
pytestmark = pytest.mark.slow  # every test reads one whole participant run with a template space


@pytest.fixture(scope="module")
def template_run(tiny_model, tmp_path_factory):  # noqa: F811
    from demist_bids.phantom import generate_cohort

    base = tmp_path_factory.mktemp("template_space")
    cohort, out, work = base / "bids", base / "out", base / "work"
    generate_cohort(cohort, subjects=1, seed=7, scale=0.6, control_fraction=0.0)
    proc = subprocess.run(
        [sys.executable, "-m", "demist_bids", str(cohort), str(out), "participant",
         "--model", str(tiny_model), "-w", str(work), "--nprocs", "2", "--omp-nthreads", "2",
         "--samples", "2", "--seed", "5", "--output-spaces", "model", SPACE],
        capture_output=True, text=True, env={**os.environ, "NIPYPE_NO_ET": "1"})
    return proc, cohort, out


def _anat(out: Path) -> Path:
    return out / "sub-01" / "anat"


def test_maps_and_mask_lie_on_the_template_grid(template_run):
    proc, _, out = template_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    from demist_bids.preprocessing.templates import load_space_template

    template = load_space_template(SPACE, "1")
    for name in ("desc-synth_PSRmap", "desc-std_PSRmap", "desc-brain_mask"):
        path = _anat(out) / f"sub-01_space-{SPACE}_res-1_{name}.nii.gz"
        img = nib.load(path)
        assert img.shape == template.t1w.shape and np.allclose(img.affine, template.t1w.affine)
        meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert meta["Resolution"].startswith(f"{SPACE} grid res-1")
        assert "nilearn" in meta["TemplateRegistration"]["TemplateSource"]
        assert "SpatialReference" not in meta  # a standard template names its own space
    mask = np.asanyarray(nib.load(_anat(out) / f"sub-01_space-{SPACE}_res-1_desc-brain_mask.nii.gz")
                         .dataobj)
    assert set(np.unique(mask)) == {0, 1}
    psr = nib.load(_anat(out) / f"sub-01_space-{SPACE}_res-1_desc-synth_PSRmap.nii.gz").get_fdata()
    assert np.isfinite(psr).all() and psr[mask > 0].std() > 0
    sidecar = _anat(out) / f"sub-01_space-{SPACE}_res-1_desc-synth_PSRmap.json"
    meta = json.loads(sidecar.read_text())
    assert meta["Units"] == "1" and meta["TemplateRegistration"]["BrainMaskDice"] > 0.9
    # the group level still sees one scan
    from demist_bids.derivatives.outputs import identify

    assert identify(f"sub-01_space-{SPACE}_res-1_desc-synth_PSRmap.nii.gz") == "psr_space"


def test_transforms_are_read_back_by_simpleitk_and_nitransforms(template_run):
    import SimpleITK as sitk

    from demist_bids.preprocessing.grids import resample
    from demist_bids.preprocessing.templates import load_space_template

    _, _, out = template_run
    forward = _anat(out) / f"sub-01_from-T1w_to-{SPACE}_mode-image_xfm.h5"
    inverse = _anat(out) / f"sub-01_from-{SPACE}_to-T1w_mode-image_xfm.h5"
    for path in (forward, inverse):
        assert path.with_suffix(".json").is_file()
    template = load_space_template(SPACE, "1")
    native_mask = nib.load(_anat(out) / "sub-01_desc-brain_mask.nii.gz")
    written = np.asanyarray(nib.load(
        _anat(out) / f"sub-01_space-{SPACE}_res-1_desc-brain_mask.nii.gz").dataobj) > 0
    # SimpleITK: the forward file resamples the native mask onto what demist wrote
    again = resample(native_mask, template.t1w.affine, template.t1w.shape, order=0,
                     transform=sitk.ReadTransform(str(forward)), dtype=np.uint8)
    overlap = 2 * (written & (np.asanyarray(again.dataobj) > 0)).sum() / (
        written.sum() + (np.asanyarray(again.dataobj) > 0).sum())
    assert overlap > 0.97  # the written mask came from the model grid, this from the native one
    # nitransforms: the same mapping of points (RAS), and the inverse undoes it
    nitransforms = pytest.importorskip("nitransforms")
    from nitransforms.manip import load

    chain, back = load(str(forward), fmt="itk"), load(str(inverse), fmt="itk")
    ijk = np.argwhere(written)[::997]
    ras = nib.affines.apply_affine(template.t1w.affine, ijk)
    mapped = chain.map(ras)
    reference = sitk.ReadTransform(str(forward))
    lps = np.array([reference.TransformPoint(tuple(map(float, p))) for p in ras * [-1, -1, 1]])
    assert np.median(np.linalg.norm(mapped - lps * [-1, -1, 1], axis=1)) < 0.5
    assert np.median(np.linalg.norm(back.map(mapped) - ras, axis=1)) < 1.0
    assert nitransforms.__version__


def test_report_has_the_template_registration(template_run):
    _, _, out = template_run
    figure = out / "sub-01" / "figures" / f"sub-01_desc-template{SPACE}.svg"
    assert figure.is_file()
    report = (out / "sub-01.html").read_text()
    assert f"Registration to {SPACE}" in report
    assert f"sub-01_from-T1w_to-{SPACE}_mode-image_xfm.h5" in report  # listed among outputs
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "B-spline" in citation and "missing bibliography" not in citation


def test_template_outputs_pass_the_bids_validator(template_run):
    _, _, out = template_run
    proc = subprocess.run(["bids-validator-deno", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
