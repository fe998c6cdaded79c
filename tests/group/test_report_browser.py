"""``group_PSR.html`` in a real headless Chromium: no errors, everything drawn, a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from demist_bids.config import Config
from demist_bids.cli.group import run_group
from tests.group import chromium
from tests.group import cohort as toy

pytestmark = pytest.mark.skipif(
    chromium.chromium_binary() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium)",
)

CHECKS = {
    "charts": "document.querySelectorAll('svg.chart').length",
    "dots": "document.querySelectorAll('svg.chart circle.dot').length",
    "broken_images": "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length",
    "images": "document.images.length",
    "sort": (
        "(() => { const th = document.querySelector('#outliers table.sortable th:nth-child(5)');"
        " th.click(); th.click(); return th.getAttribute('aria-sort'); })()"
    ),
    "flag_rings": "document.querySelectorAll('svg.chart circle.flag').length",
}


def _artifact_dir(tmp_path: Path) -> Path:
    """Where the screenshot goes: $DEMIST_TEST_ARTIFACTS when set (to look at it), else tmp."""
    target = Path(os.environ.get("DEMIST_TEST_ARTIFACTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_group_report_renders_without_errors(tmp_path):
    groups = {"01": "MS", "02": "MS", "03": "control", "04": "MS", "05": "control",
              "06": "MS", "07": "control", "08": "MS", "09": "control"}  # 8+ runs: screened
    c = toy.make_cohort(tmp_path / "data", groups)
    lesions, measured = tmp_path / "lesions", tmp_path / "qmt"
    for index, (sub, group) in enumerate(groups.items()):
        offset = 0.002 * index - 0.004
        psr = toy.psr_map(offset, scale=3.0 if sub == "04" else 1.0, with_lesion=group == "MS")
        c.add_result(sub, psr=psr, std=0.01 + 0.001 * index)
        toy.save(
            measured / f"sub-{sub}" / "anat" / f"sub-{sub}_PSRmap.nii.gz",
            toy.psr_map(offset + 0.003 * (index % 2), with_lesion=group == "MS"),
        )
        if group == "MS":
            toy.save(
                lesions / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-consensus_mask.nii.gz",
                toy.lesion_mask(),
            )
    c.add_input("10")
    c.add_crash("10", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    config = Config()
    config.execution.bids_dir, config.execution.output_dir = c.bids, c.out
    config.execution.derivatives = {"lesions": lesions}
    config.train.psr_derivatives = measured
    assert run_group(config) == 0

    shot = _artifact_dir(tmp_path) / "group_PSR.png"
    result = chromium.render(
        c.out / "group_PSR.html", tmp_path / "profile", screenshot=shot, evaluate=CHECKS
    )
    assert result.errors == []
    values = result.evaluations
    assert values["charts"] >= 10 and values["dots"] >= 40
    assert values["images"] >= 6 and values["broken_images"] == 0
    assert values["sort"] == "descending"
    assert values["flag_rings"] >= 2  # the x3 subject is ringed in every PSR plot
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_page_is_caught(tmp_path):
    """The check itself can fail: a page with a script error and a missing image is reported."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><img src='missing.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    result = chromium.render(page, tmp_path / "profile")
    text = "\n".join(result.errors)
    assert "boom" in text and "undefinedFunction" in text and "missing.png" in text
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
