"""The subject and evaluation pages in a real headless Chromium: no errors, every figure drawn.

(``group_PSR.html`` has its own browser test in tests/group/test_report_browser.py.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.group import chromium
from tests.group import cohort as toy
from tests.group.test_report_browser import _artifact_dir

pytestmark = pytest.mark.skipif(
    chromium.chromium_binary() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium)",
)

CHECKS = {
    "figures": "document.querySelectorAll('.reportlet svg').length",
    "drawn": ("Array.from(document.querySelectorAll('.reportlet svg'))"
              ".filter(s => s.getBoundingClientRect().width > 300).length"),
    "svg_images": "document.querySelectorAll('svg image').length",
    "broken_images": ("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                      ".length"),
    "sections": "document.querySelectorAll('main section').length",
    "styled": "getComputedStyle(document.querySelector('header')).backgroundColor",
}


def test_subject_page_with_every_figure_renders_without_errors(tmp_path):
    import nibabel as nib

    from demist_bids.reports import mosaic
    from demist_bids.reports.subject import write_subject_reports

    c = toy.make_cohort(tmp_path / "data")
    c.add_result("01", report=False)
    figures = c.out / "sub-01" / "figures"
    figures.mkdir(parents=True)
    dseg = toy.tissue()
    rng = np.random.default_rng(0)
    t1w = nib.Nifti1Image((dseg * 100 + rng.random(dseg.shape) * 20).astype(np.float32), toy.AFFINE)
    brain = nib.Nifti1Image((dseg > 0).astype(np.uint8), toy.AFFINE)
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("t1w", "brain", "psr")}
    nib.save(t1w, paths["t1w"])
    nib.save(brain, paths["brain"])
    toy.save(paths["psr"], toy.psr_map(with_lesion=True))
    mosaic.registration_reportlet(t1w, t1w, nib.Nifti1Image(dseg, toy.AFFINE),
                                  str(figures / "sub-01_desc-registration.svg"))
    mosaic.mask_reportlet(t1w, brain, str(figures / "sub-01_desc-brainmask.svg"))
    mosaic.template_reportlet(t1w, t1w, brain, str(figures / "sub-01_desc-templateToy.svg"))
    for key in ("psr", "uncertainty"):
        mosaic.map_mosaic_svg(paths["t1w"], paths["psr"], paths["brain"],
                              figures / f"sub-01_desc-{key}.svg", title=key)

    class Item:
        subject, session, bids_name = "01", None, "sub-01"

    write_subject_reports(c.out, [Item()], run_uuid="run-1")
    shot = _artifact_dir(tmp_path) / "sub-01.png"
    result = chromium.render(c.out / "sub-01.html", tmp_path / "profile", screenshot=shot,
                             evaluate=CHECKS)
    assert result.errors == []
    values = result.evaluations
    assert values["figures"] == values["drawn"] == 5
    assert values["svg_images"] >= 2 * 2 * 3 * mosaic.N_CUTS  # both flickers' frames, every panel
    assert values["broken_images"] == 0 and values["sections"] == 2 + 5 + 3
    assert values["styled"] == "rgb(29, 43, 58)"  # the shared stylesheet applies
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_page_renders_without_errors(tmp_path):
    from demist_bids.reports.evaluation import write_evaluation

    rows = [{"method": m, "fold": f, "bids_name": f"sub-{f}{s}", "psnr": 20.0 + s + (m == "demist"),
             "ssim": 0.8, "auc_combined": 0.8} for m in ("demist", "linear") for f in (0, 1)
            for s in range(3)]
    rng = np.random.default_rng(1)
    roc = {"demist": (rng.normal(1, 1, 80), rng.normal(0, 1, 30)),
           "measured": (rng.normal(2, 1, 80), rng.normal(0, 1, 30))}
    page = write_evaluation(pd.DataFrame(rows), roc, tmp_path / "evaluation")["html"]
    result = chromium.render(page, tmp_path / "profile", evaluate={
        "tables": "document.querySelectorAll('main table').length",
        "roc": "document.querySelector('#roc svg').getBoundingClientRect().width",
        "sections": "document.querySelectorAll('main section').length"})
    assert result.errors == []
    assert result.evaluations["tables"] == 2 and result.evaluations["roc"] > 200
    assert result.evaluations["sections"] == 4
