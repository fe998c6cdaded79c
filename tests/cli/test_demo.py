"""``demist-demo`` end to end: phantom cohort, participant with the embedded demo model, group.

The checks the issues name: the demo finishes, its derivatives pass the BIDS
validator, the group table has a row per subject, the group and subject reports
render in headless Chromium without errors, and three subjects (one deliberately
corrupted) are too few to flag outliers: the table says so instead of flagging.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from demist_bids.data import demo_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    if not (demo_model_dir() / "config.json").is_file():
        pytest.fail("the embedded demo model is missing from the package")
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = subprocess.run([sys.executable, "-m", "demist_bids.cli.demo", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _rows(tsv: Path) -> list[dict]:
    with open(tsv, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_demo_outputs_validate_and_say_demo(demo):
    deriv = demo / "derivatives" / "demist"
    proc = subprocess.run(["bids-validator-deno", str(deriv)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert len(sorted(deriv.rglob("*_desc-synth_PSRmap.json"))) == 3
    sidecars = sorted(deriv.rglob("sub-*/anat/*.json"))
    model_made = [s for s in sidecars if "desc-preproc" not in s.name and "_xfm" not in s.name]
    assert len(model_made) >= 3 * 3  # PSR map, brain mask and dseg of each subject
    for sidecar in model_made:  # every output of the model's run says DEMO
        meta = json.loads(sidecar.read_text())
        assert meta["Model"]["IsDemo"] is True and "DEMO" in meta["Warning"]
    for sidecar in set(sidecars) - set(model_made):  # preprocessed inputs and transforms owe nothing to it
        meta = json.loads(sidecar.read_text())
        assert "Model" not in meta and meta["SoftwareVersion"].startswith("demist")
    assert (deriv / "logs" / "CITATION.md").is_file()


def test_group_table_has_a_row_per_subject(demo):
    rows = _rows(demo / "derivatives" / "demist" / "group_PSR.tsv")
    assert [r["bids_name"].split("_")[0] for r in rows] == ["sub-01", "sub-02", "sub-03"]
    assert all(r["status"] == "ok" for r in rows)


def test_reports_render_in_chromium(demo, tmp_path):
    from tests.group import chromium

    if chromium.chromium_binary() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    deriv = demo / "derivatives" / "demist"
    for page in ("group_PSR.html", "sub-01.html"):
        result = chromium.render(deriv / page, tmp_path / page, screenshot=tmp_path / f"{page}.png")
        assert result.errors == [], (page, result.errors)


def test_three_subjects_are_too_few_to_flag(demo, tmp_path):
    import shutil

    work = tmp_path / "demo"
    shutil.copytree(demo, work, ignore=shutil.ignore_patterns("work"))
    deriv = work / "derivatives" / "demist"
    psr_file = deriv / "sub-02" / "anat" / "sub-02_desc-synth_PSRmap.nii.gz"
    img = nb.load(psr_file)
    nb.Nifti1Image(np.asanyarray(img.dataobj) * 3.0, img.affine, img.header).to_filename(psr_file)
    proc = subprocess.run([sys.executable, "-m", "demist_bids", str(work / "bids"), str(deriv),
                           "group", "-w", str(tmp_path / "w")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["bids_name"].split("_")[0]: r for r in _rows(deriv / "group_PSR.tsv")}
    # the median and MAD of three runs cannot tell the x3 subject from the others (they once
    # flagged two of the three): no run is flagged, each row says why
    assert [r["outlier"] for r in rows.values()] == ["n/a"] * 3
    assert {r["outlier_measures"] for r in rows.values()} == {"too few runs to flag"}
    assert "Too few runs to flag" in (deriv / "group_PSR.html").read_text()
