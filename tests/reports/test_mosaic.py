"""Reportlet figures: the outlines drawn are the ones named."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from demist_bids.reports.mosaic import registration_reportlet, template_reportlet

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


def test_the_slice_rule_spreads_cuts_over_the_mask_extent():
    from demist_bids.reports.mosaic import N_CUTS, cuts

    mask = np.zeros((40, 50, 60), bool)
    mask[10:31, 5:46, 20:41] = True
    assert cuts(mask, 0) == [13, 16, 19, 21, 24, 27]  # 15 % .. 85 % of 10..30
    assert cuts(mask, 2, 3) == [23, 30, 37]
    assert len(cuts(mask, 1)) == N_CUTS
    assert cuts(np.zeros((10, 10, 21), bool), 2, 3) == [3, 10, 17]  # empty: the whole axis


def test_every_figure_places_its_cuts_with_the_one_rule(tmp_path, monkeypatch):
    """The preprocessing reportlets and the PSR/uncertainty mosaics all call ``cuts`` on the
    brain, once per row (sagittal, coronal, axial)."""
    from demist_bids.reports import mosaic

    calls = []
    rule = mosaic.cuts

    def spy(mask, axis, n=mosaic.N_CUTS):
        calls.append((int(mask.sum()), axis, n))
        return rule(mask, axis, n)

    monkeypatch.setattr(mosaic, "cuts", spy)
    rng = np.random.default_rng(2)
    brain = np.zeros((24, 26, 22), np.uint8)
    brain[4:20, 5:21, 3:19] = 1
    t1w = _image(rng.random(brain.shape).astype(np.float32))
    for name, data in (("t1w.nii.gz", t1w.dataobj), ("mask.nii.gz", brain),
                       ("psr.nii.gz", rng.random(brain.shape).astype(np.float32))):
        nib.save(_image(np.asarray(data)), tmp_path / name)
    mosaic.mask_reportlet(t1w, _image(brain), str(tmp_path / "mask.svg"))
    out = mosaic.map_mosaic_svg(tmp_path / "t1w.nii.gz", tmp_path / "psr.nii.gz",
                                tmp_path / "mask.nii.gz", tmp_path / "psr.svg", title="PSR")
    expected = [(int(brain.sum()), axis, mosaic.N_CUTS) for axis in mosaic.AXES]
    assert calls == expected * 2
    svg = out.read_text()
    assert svg.startswith("<svg") and ">PSR<" not in svg  # matplotlib draws the title as paths
    assert svg.count("<image") == 3 * mosaic.N_CUTS + 1  # every panel (T1w and map) and the bar
