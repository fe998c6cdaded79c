"""Reportlet figures: the outlines drawn are the ones named."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from demist_bids.preprocessing.figures import registration_reportlet, template_reportlet

YELLOW = "#ffff00"


def _image(data) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data), np.eye(4))


def test_registration_outline_is_the_white_matter(tmp_path):
    rng = np.random.default_rng(0)
    t1w = _image(rng.random((30, 30, 30)).astype(np.float32))
    dseg = np.zeros((30, 30, 30), np.uint8)
    dseg[5:25, 5:25, 5:25] = 3  # CSF (BIDS order: 1 GM, 2 WM, 3 CSF)
    dseg[10:20, 10:20, 10:20] = 1
    no_wm = registration_reportlet(t1w, t1w, _image(dseg), str(tmp_path / "a.svg"))
    assert YELLOW not in open(no_wm).read()
    dseg[13:17, 13:17, 13:17] = 2
    with_wm = registration_reportlet(t1w, t1w, _image(dseg), str(tmp_path / "b.svg"))
    assert YELLOW in open(with_wm).read()


def test_template_reportlet_flickers_two_views_under_the_template_brain(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.zeros((30, 30, 30), np.uint8)
    mask[6:24, 6:24, 6:24] = 1
    out = template_reportlet(_image(rng.random(mask.shape).astype(np.float32)),
                             _image(rng.random(mask.shape).astype(np.float32)), _image(mask),
                             str(tmp_path / "t.svg"))
    svg = open(out).read()
    assert svg.count("<image") >= 2 * 18 and YELLOW in svg  # 3 x 6 cuts per view
