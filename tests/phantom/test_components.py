"""The phantom's building blocks do what their docstrings promise."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from demist_bids.phantom.acquisition import HeadMotion, draw_motion, slice_thickness
from demist_bids.phantom.fields import add_rician_noise, smooth_field
from demist_bids.phantom.lesions import Lesion, render


def test_smooth_field_is_unit_variance_smooth_and_seeded():
    fields = [smooth_field((40, 48, 40), np.random.default_rng(seed)) for seed in range(20)]
    stds = [f.std() for f in fields]
    assert 0.5 < np.mean(stds) < 1.5
    assert np.abs(np.diff(fields[0], axis=0)).max() < 0.5  # smooth between neighbours
    assert np.array_equal(fields[3], smooth_field((40, 48, 40), np.random.default_rng(3)))


def test_rician_noise_is_rayleigh_in_background_and_unbiased_at_high_snr():
    rng = np.random.default_rng(0)
    background = add_rician_noise(np.zeros(200_000, np.float32), 1.0, rng)
    assert abs(background.mean() - np.sqrt(np.pi / 2)) < 0.01  # Rayleigh mean
    bright = add_rician_noise(np.full(200_000, 50.0, np.float32), 1.0, rng)
    assert abs(bright.mean() - 50.0) < 0.05 and abs(bright.std() - 1.0) < 0.02


def test_flair_to_t1w_matrix_inverts_the_head_motion():
    motion = HeadMotion(
        rotation_deg=(3.0, -2.0, 1.0), translation_mm=(2.0, -4.0, 1.0), center=(5.0, -10.0, 20.0)
    )
    rotation = Rotation.from_euler("xyz", motion.rotation_deg, degrees=True).as_matrix()
    p = np.array([30.0, -12.0, 41.0])  # a point of the anatomy in T1w world
    q = (
        rotation @ (p - motion.center) + motion.center + motion.translation_mm
    )  # same point in FLAIR world
    matrix = motion.flair_to_t1w()
    assert np.allclose(matrix @ np.append(q, 1.0), np.append(p, 1.0))
    assert np.allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3))  # rigid


def test_drawn_motion_is_a_few_degrees_and_millimetres():
    for seed in range(10):
        motion = draw_motion(np.random.default_rng(seed), np.zeros(3))
        assert 2.0 <= np.linalg.norm(motion.rotation_deg) <= 5.0 + 1e-9
        assert 2.0 <= np.linalg.norm(motion.translation_mm) <= 6.0 + 1e-9


def test_slice_thickness_scales_but_stays_anisotropic():
    assert slice_thickness(1.0) == 3.0
    assert slice_thickness(0.5) == 1.5
    assert slice_thickness(0.25) == 1.5


def test_lesion_render_volume_matches_the_ellipsoid_and_rim_is_graded():
    lesion = Lesion(
        zone="deep",
        center=(20.0, 20.0, 20.0),
        radii=(6.0, 4.0, 3.0),
        rotation=(10.0, 20.0, 30.0),
        psr_loss=0.5,
        t1_loss=0.3,
        flair_gain=0.8,
    )
    maps, origin = render([lesion], (40, 40, 40))
    volume = np.sum(maps["extent"] >= 0.5)
    assert abs(volume - 4 / 3 * np.pi * 6 * 4 * 3) / volume < 0.1
    center = tuple(20 - np.asarray(origin))
    assert np.isclose(maps["psr_loss"][center], 0.5, atol=0.01)
    assert np.isclose(maps["flair_gain"][center], 0.8, atol=0.01)
    edge = (maps["extent"] > 0.2) & (maps["extent"] < 0.8)
    assert np.all(maps["psr_loss"][edge] > 0.05) and np.all(maps["psr_loss"][edge] < 0.5)
    inflated, _ = render([lesion], (40, 40, 40), inflate=1.2)
    assert np.sum(inflated["extent"] >= 0.5) > 1.5 * volume


def test_patients_nawm_psr_lower_than_controls_on_average():
    from demist_bids.phantom.psr import draw_myelin

    def levels(patient):
        draws = [
            draw_myelin((4, 4, 4), np.random.default_rng(seed), patient=patient, lesion_load=5.0)
            for seed in range(200)
        ]
        return np.array([d.wm_psr for d in draws]), np.array([d.gm_psr for d in draws])

    control_wm, control_gm = levels(False)
    patient_wm, patient_gm = levels(True)
    assert 0.17 < control_wm.mean() < 0.20 and 0.065 < control_gm.mean() < 0.085
    assert patient_wm.mean() < control_wm.mean() - 0.005  # diffuse NAWM damage
    assert control_wm.std() > 0.004  # subjects differ


def test_atrophy_enlarges_the_ventricles_only_near_them():
    from demist_bids.phantom.template import canonical_head
    from demist_bids.phantom.warp import subject_warp

    head = canonical_head()

    def ventricular_csf(atrophy):
        warp = subject_warp(
            head.shape,
            head.center,
            0.3,
            np.random.default_rng(5),
            atrophy=atrophy,
            atrophy_center=head.ventricle_center,
        )
        near = np.linalg.norm(warp.coordinates - head.ventricle_center[:, None, None, None], axis=0)
        csf = warp.sample({"csf": head.csf})["csf"]
        return csf[near < 15].sum(), warp.coordinates

    plain, plain_coords = ventricular_csf(0.0)
    atrophic, atrophic_coords = ventricular_csf(0.12)
    assert atrophic > 1.1 * plain
    far = np.linalg.norm(plain_coords - head.ventricle_center[:, None, None, None], axis=0) > 80
    assert np.abs(atrophic_coords - plain_coords)[:, far].max() < 0.05
