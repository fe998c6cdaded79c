"""Evaluation measures against cases small enough to compute by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from demist_bids.evaluation.metrics import (
    bland_altman,
    image_metrics,
    lesion_auc,
    lesion_level_auc,
    lesion_level_auc_of,
    lesion_medians,
    lesion_regions,
    mirror_left_right,
    nawm_regions,
    robust_z,
)


@pytest.fixture()
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.05, 0.25, size=(20, 22, 18))


@pytest.fixture()
def ball_mask() -> np.ndarray:
    grid = np.indices((20, 22, 18)).astype(float)
    centre = np.array([9.5, 10.5, 8.5])[:, None, None, None]
    return (np.sum((grid - centre) ** 2, axis=0) <= 7**2).astype(np.uint8)


def test_identical_images_are_perfect(volume, ball_mask):
    m = image_metrics(volume, volume, ball_mask, data_range=0.3)
    assert m["psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0)
    assert m["mse"] == 0 and m["l1"] == 0
    assert m["ncc"] == pytest.approx(1.0)


def test_constant_offset_gives_known_errors(volume, ball_mask):
    m = image_metrics(volume + 0.01, volume, ball_mask, data_range=0.3)
    assert m["mse"] == pytest.approx(1e-4)
    assert m["l1"] == pytest.approx(0.01)
    assert m["psnr"] == pytest.approx(10 * math.log10(0.09 / 1e-4))
    assert m["ncc"] == pytest.approx(1.0)
    assert 0 < m["ssim"] < 1
    assert image_metrics(-volume, volume, ball_mask, data_range=0.3)["ncc"] == pytest.approx(-1.0)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b, data_range = 0.2, 0.1, 0.3
    mask = np.ones((12, 12, 12))
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    m = image_metrics(np.full(mask.shape, a), np.full(mask.shape, b), mask, data_range=data_range)
    assert m["ssim"] == pytest.approx(expected, rel=1e-9)


def test_voxels_outside_the_mask_do_not_count(volume, ball_mask):
    noisy = volume.copy()
    noisy[ball_mask == 0] = 50.0
    assert image_metrics(noisy, volume, ball_mask, data_range=0.3) == image_metrics(
        volume, volume, ball_mask, data_range=0.3
    )


def test_bad_arguments_are_refused(volume, ball_mask):
    with pytest.raises(ValueError, match="data_range"):
        image_metrics(volume, volume, ball_mask, data_range=0)
    with pytest.raises(ValueError, match="empty"):
        image_metrics(volume, volume, np.zeros_like(ball_mask), data_range=1)
    with pytest.raises(ValueError, match="grid"):
        image_metrics(volume, volume[1:], ball_mask, data_range=1)


def test_bland_altman_by_hand():
    target = np.zeros((2, 2, 1))
    pred = np.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 2, 1)
    ba = bland_altman(pred, target, np.ones_like(pred))
    sd = np.std([1, 2, 3, 4], ddof=1)
    assert ba == pytest.approx(
        {"bias": 2.5, "loa_low": 2.5 - 1.96 * sd, "loa_high": 2.5 + 1.96 * sd, "n": 4}
    )
    assert math.isnan(bland_altman(pred, target, np.zeros_like(pred))["bias"])


def _shell_count(low: float, high: float, spacing=(1, 1, 1)) -> int:
    """Lattice points with low < distance <= high around a point, counted by brute force."""
    r = 10
    count = 0
    for offset in itertools.product(range(-r, r + 1), repeat=3):
        d = math.dist([0, 0, 0], [o * s for o, s in zip(offset, spacing)])
        count += low < d <= high
    return count


def test_nawm_regions_single_lesion_voxel():
    wm = np.ones((32, 32, 32), dtype=bool)
    lesion = np.zeros_like(wm)
    lesion[10, 16, 16] = True
    regions = nawm_regions(lesion, wm)
    assert regions["proximal"].sum() == _shell_count(1, 5)
    assert not regions["proximal"][10, 16, 16]  # the lesion itself is never NAWM
    assert not regions["proximal"][11, 16, 16]  # the 1 mm partial-volume shell is skipped
    # WM spans axis 0 from 0 to 31: index 10 mirrors to 21, 11 mm from the lesion.
    assert regions["distal"].sum() == 1 and regions["distal"][21, 16, 16]
    assert np.array_equal(regions["combined"], regions["proximal"] | regions["distal"])
    assert not (regions["proximal"] & regions["distal"]).any()


def test_nawm_regions_voxel_size_and_affine():
    wm = np.ones((32, 32, 32), dtype=bool)
    lesion = np.zeros_like(wm)
    lesion[16, 10, 16] = True
    anisotropic = nawm_regions(lesion, wm, voxel_size=(2, 1, 1))
    assert anisotropic["proximal"].sum() == _shell_count(1, 5, (2, 1, 1))
    # An affine whose world x runs along array axis 1: the mirror flips axis 1.
    affine = np.array([[0, 1, 0, 0], [2, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    regions = nawm_regions(lesion, wm, affine=affine)
    assert regions["distal"][16, 21, 16] and regions["distal"].sum() == 1
    assert regions["proximal"].sum() == _shell_count(1, 5, (2, 1, 1))


def test_mirror_uses_the_tissue_midline():
    ref = np.zeros((10, 3, 3))
    ref[2:7] = 1  # midline between 2 and 6: index 4
    vol = np.zeros_like(ref)
    vol[3, 1, 1] = 7
    assert mirror_left_right(vol, ref)[5, 1, 1] == 7


def test_no_lesion_gives_empty_regions_and_nan_auc():
    wm = np.ones((12, 12, 12))
    regions = nawm_regions(np.zeros_like(wm), wm)
    assert all(not r.any() for r in regions.values())
    assert all(math.isnan(v) for v in lesion_auc(np.ones_like(wm), np.zeros_like(wm), wm).values())


def test_lesion_auc_direction():
    wm = np.ones((32, 32, 32), dtype=bool)
    lesion = np.zeros_like(wm)
    lesion[8:11, 14:17, 14:17] = True
    psr = np.where(lesion, 0.05, 0.2)
    assert lesion_auc(psr, lesion, wm) == {
        "auc_proximal": 1.0,
        "auc_distal": 1.0,
        "auc_combined": 1.0,
    }
    inverted = lesion_auc(np.where(lesion, 0.3, 0.2), lesion, wm)
    assert inverted == {"auc_proximal": 0.0, "auc_distal": 0.0, "auc_combined": 0.0}
    assert lesion_auc(np.full(wm.shape, 0.2), lesion, wm)["auc_combined"] == 0.5


def test_robust_z_by_hand():
    z = robust_z([1, 2, 3, 4, 100])
    assert z == pytest.approx((np.array([1, 2, 3, 4, 100]) - 3) / 1.4826)
    tied = robust_z([1, 1, 1, 1, 5])  # MAD 0: mean absolute deviation 0.8
    assert tied[-1] == pytest.approx(4 / (1.2533 * 0.8)) and tied[0] == 0
    assert np.array_equal(robust_z([2, 2, 2]), [0, 0, 0])
    with_nan = robust_z([1, np.nan, 2, 3, 4, 100])
    assert math.isnan(with_nan[1]) and with_nan[-1] == pytest.approx(97 / 1.4826)
    assert np.array_equal(robust_z([1.0, 9.0]), [0, 0])


def test_robust_z_ignores_rounding_noise():
    equal_but_noisy = np.array([0.1, 0.1 + 1e-16, 0.1 - 1e-16, 0.1, 0.3])
    z = robust_z(equal_but_noisy)
    assert np.allclose(z[:4], 0, atol=1e-12) and z[-1] == pytest.approx(0.2 / (1.2533 * 0.04))


def test_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    wm = np.ones((24, 24, 24), dtype=bool)
    lesion = np.zeros_like(wm)
    lesion[5:9, 10:14, 10:14] = True
    psr = np.round(rng.normal(0.15, 0.03, wm.shape), 2)  # rounding makes many ties
    psr[lesion] -= 0.02
    regions = nawm_regions(lesion, wm)
    auc = lesion_auc(psr, lesion, wm, regions=regions)
    for name in ("proximal", "distal", "combined"):
        pos, neg = psr[regions[name]], psr[lesion]
        labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        assert auc[f"auc_{name}"] == pytest.approx(
            roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12
        )


def test_nawm_regions_crop_is_exact():
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(5)
    wm = rng.random((30, 28, 26)) < 0.8
    lesion = np.zeros(wm.shape, dtype=bool)
    lesion[4:7, 3:6, 20:24] = True
    lesion[20, 14, 2] = True
    spacing = (1.0, 1.2, 2.0)
    regions = nawm_regions(lesion, wm, voxel_size=spacing, proximal_mm=(1, 4))
    distance = distance_transform_edt(~lesion, sampling=spacing)
    nawm = wm & ~lesion
    assert np.array_equal(regions["proximal"], nawm & (distance > 1) & (distance <= 4))
    expected_distal = mirror_left_right(lesion, wm) & nawm & (distance > 4)
    assert np.array_equal(regions["distal"], expected_distal)


def _three_lesions():
    """White matter 4..27 along every axis; three separate lesions on the left (axis 0 < 16)."""
    wm = np.zeros((32, 32, 32), dtype=bool)
    wm[4:28, 4:28, 4:28] = True
    lesion = np.zeros_like(wm)
    lesion[7:9, 8:10, 8:10] = True
    lesion[8:11, 20:23, 20:23] = True
    lesion[10, 15, 22] = True
    return wm, lesion


def test_lesion_regions_are_per_lesion_and_matched():
    wm, lesion = _three_lesions()
    regions = lesion_regions(lesion, wm)
    assert [r["lesion"].size for r in regions] == [8, 27, 1]
    from scipy.ndimage import distance_transform_edt

    nawm = (wm & ~lesion).ravel()
    far = (distance_transform_edt(~lesion) > 5).ravel()
    for r in regions:
        prox = np.zeros(wm.size, bool)
        prox[r["proximal"]] = True
        dist = np.zeros(wm.size, bool)
        dist[r["distal"]] = True
        assert r["proximal"].size and r["distal"].size
        assert not (prox & lesion.ravel()).any() and not (dist & lesion.ravel()).any()
        assert (prox <= nawm).all() and (dist <= nawm & far).all()
        # distal regions lie on the other side of the midline (index 15.5 along axis 0)
        assert (np.unravel_index(r["distal"], wm.shape)[0] > 15).all()
        assert np.array_equal(r["combined"], np.union1d(r["proximal"], r["distal"]))
    # the single-voxel lesion's shell is the (1, 5] mm ball around it less the one voxel,
    # 5 mm away, of its neighbour: lesions are never NAWM
    assert regions[2]["proximal"].size == _shell_count(1, 5) - 1


def test_lesion_level_auc_known_answers():
    wm, lesion = _three_lesions()
    darker = np.where(lesion, 0.09, 0.18) * (wm | lesion)
    assert lesion_level_auc(darker, lesion, wm) == {
        "lesion_auc_proximal": 1.0, "lesion_auc_distal": 1.0, "lesion_auc_combined": 1.0}
    equal = np.where(wm | lesion, 0.18, 0.0)
    assert lesion_level_auc(equal, lesion, wm) == {
        "lesion_auc_proximal": 0.5, "lesion_auc_distal": 0.5, "lesion_auc_combined": 0.5}
    # one lesion brighter than the NAWM: 6 of the 9 (NAWM, lesion) pairs are ordered
    bright = darker.copy()
    bright[10, 15, 22] = 0.25
    assert lesion_level_auc(bright, lesion, wm)["lesion_auc_proximal"] == pytest.approx(6 / 9)
    # a lesion counts once whatever its size: voxel-wise the big one dominates
    assert lesion_auc(bright, lesion, wm)["auc_proximal"] > 0.9


def test_lesion_level_auc_without_lesions_is_nan_and_pools():
    wm, lesion = _three_lesions()
    none = lesion_level_auc(np.ones(wm.shape), np.zeros_like(lesion), wm)
    assert set(none) == {"lesion_auc_proximal", "lesion_auc_distal", "lesion_auc_combined"}
    assert all(math.isnan(v) for v in none.values())
    regions = lesion_regions(lesion, wm)
    darker = lesion_medians(np.where(lesion, 0.09, 0.18), regions)
    brighter = lesion_medians(np.where(lesion, 0.3, 0.18), regions)
    pooled = {k: np.r_[darker[k], brighter[k]] for k in darker}
    assert len(pooled["lesion"]) == 6
    # 3 dark lesions below all 6 NAWM medians, 3 bright ones above all: 18 of 36 pairs
    assert lesion_level_auc_of(pooled)["lesion_auc_combined"] == pytest.approx(0.5)
