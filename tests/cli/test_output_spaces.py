"""``--output-spaces``: the parser, where templates come from, and the exit codes (64, 66).

Each test session has its own TemplateFlow home (tests/conftest.py) holding
only TemplateFlow's 0-byte stubs, as on a machine without network; one test
places small real NIfTIs over them.
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

from demist_bids.exceptions import MissingInputError, UsageError
from demist_bids.utils.spaces import OutputSpace, parse_output_spaces, template_spaces


def _dataset(root: Path) -> Path:
    """A one-subject BIDS dataset whose images are never read (the runs stop before)."""
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "spaces", "BIDSVersion": "1.9.0"}))
    for suffix in ("T1w", "FLAIR"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
                 root / "sub-01" / "anat" / f"sub-01_{suffix}.nii.gz")
    return root


def _demist(tmp_path: Path, *spaces: str) -> subprocess.CompletedProcess:
    bids = _dataset(tmp_path / "bids")
    return subprocess.run(
        [sys.executable, "-m", "demist_bids", str(bids), str(tmp_path / "out"), "participant",
         "-w", str(tmp_path / "work"), "--skip-bids-validation", "--output-spaces", *spaces],
        capture_output=True, text=True, env={**os.environ, "NIPYPE_NO_ET": "1"})


def test_nipreps_syntax_is_parsed_once():
    spaces = parse_output_spaces(["T1w", "model", "MNI152NLin2009cAsym:res-2",
                                  "MNI152NLin2009cAsym:res-02", "MNI152NLin2009aSym"])
    assert spaces == [OutputSpace("T1w"), OutputSpace("model"),
                      OutputSpace("MNI152NLin2009cAsym", "2"),
                      OutputSpace("MNI152NLin2009aSym", "1")]
    normalized = [str(s) for s in spaces]
    assert normalized == ["T1w", "model", "MNI152NLin2009cAsym:res-2", "MNI152NLin2009aSym:res-1"]
    assert parse_output_spaces(normalized) == spaces  # a saved config re-parses to the same
    assert template_spaces(normalized) == spaces[2:]


@pytest.mark.parametrize("value, named", [
    ("MNI152NLin2009cAsyn", "unknown template 'MNI152NLin2009cAsyn'"),
    ("MNI152NLin2009cAsym:res-9", "unknown resolution res-9 of MNI152NLin2009cAsym"),
    ("MNI152NLin2009aSym:res-2", "unknown resolution res-2 of MNI152NLin2009aSym"),
    ("MNI152NLin2009cAsym:cohort-1", "not cohort-"),
    ("model:res-2", "model takes no resolution"),
])
def test_unknown_templates_and_resolutions_are_usage_errors(value, named):
    with pytest.raises(UsageError, match=named.replace("(", r"\(")):
        parse_output_spaces([value])


def test_unknown_template_exits_64_naming_it(tmp_path):
    proc = _demist(tmp_path, "MNI152NLin2009cAsym:res-2", "MNI999Fake:res-2")
    assert proc.returncode == 64, proc.stderr[-2000:]
    assert "MNI999Fake" in proc.stderr
    assert not (tmp_path / "out" / "sub-01").exists()


def test_unknown_resolution_exits_64_naming_it(tmp_path):
    proc = _demist(tmp_path, "MNI152NLin6Asym:res-7")
    assert proc.returncode == 64 and "res-7" in proc.stderr, proc.stderr[-2000:]


def test_template_without_files_exits_66_before_any_work(tmp_path):
    proc = _demist(tmp_path, "model", "MNI152NLin6Asym:res-2")
    assert proc.returncode == 66, proc.stderr[-2000:]
    assert "MNI152NLin6Asym:res-2" in proc.stderr and "no files" in proc.stderr
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if "logs" not in p.parts]
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").rglob("*.pklz"))


def test_the_nilearn_template_serves_under_its_own_name_only():
    from demist_bids.preprocessing.templates import (
        NILEARN_TEMPLATE, check_space_template, load_space_template)

    assert NILEARN_TEMPLATE == "MNI152NLin2009aSym"  # ICBM 152 nonlinear symmetric 2009a
    assert check_space_template("MNI152NLin2009aSym", "1") == "nilearn"
    template = load_space_template("MNI152NLin2009aSym", "1")
    # on the grid TemplateFlow declares for res-1 (template_description.json)
    assert template.t1w.shape == (193, 229, 193)
    assert np.allclose(template.t1w.affine[:3, 3], [-96, -132, -78])
    assert "nilearn" in template.source and template.brain_mask.get_fdata().sum() > 1e6
    for other in ("MNI152NLin2009cAsym", "MNI152NLin2009cSym"):  # never silently another
        with pytest.raises(MissingInputError, match=other):
            check_space_template(other, "1")


def test_templateflow_files_are_used_when_real(tmp_path, monkeypatch):
    """Small real NIfTIs over the 0-byte stubs: TemplateFlow is the source, at that grid."""
    from templateflow import api

    from demist_bids.preprocessing.grids import resample
    from demist_bids.preprocessing.templates import (
        check_space_template, load_space_template, nilearn_brain_mask, nilearn_files,
        space_template_grid)

    name = "MNI152NLin2009cAsym"
    t1w_stub, = api.ls(name, resolution=2, suffix="T1w", desc=None, extension=".nii.gz")
    mask_stub, = api.ls(name, resolution=2, suffix="mask", desc="brain", extension=".nii.gz")
    assert Path(t1w_stub).stat().st_size == 0
    with pytest.raises(MissingInputError):
        check_space_template(name, "2")
    source = nib.load(nilearn_files())  # a stand-in with real voxels, for this test only
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-96, -132, -78]
    t1w = resample(source, affine, (97, 115, 97))
    mask = resample(nilearn_brain_mask(source), affine, (97, 115, 97), order=0, dtype=np.uint8)
    try:
        nib.save(t1w, t1w_stub)
        nib.save(mask, mask_stub)
        assert check_space_template(name, "2") == "TemplateFlow"
        template = load_space_template(name, "2")
        assert template.t1w.shape == (97, 115, 97) and "TemplateFlow" in template.source
        grid_affine, grid_shape = space_template_grid(name, "2")
        assert grid_shape == (97, 115, 97) and np.allclose(grid_affine, t1w.affine)
        assert np.array_equal(np.asanyarray(template.brain_mask.dataobj) > 0,
                              np.asanyarray(mask.dataobj) > 0)
    finally:  # the session's TemplateFlow home is shared: put the stubs back
        for stub in (t1w_stub, mask_stub):
            Path(stub).write_bytes(b"")


def test_help_does_not_import_templateflow():
    code = ("import sys; from demist_bids.cli.parser import build_parser\n"
            "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('templateflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("False")
