"""The 1 mm RAS model grid and resampling to and from it."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from demist_bids.preprocessing import resample_to_native
from demist_bids.preprocessing.grids import ras_grid, resample


def _oblique_lps_image():
    angle = np.radians(8)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1, -1, 1]) @ rot @ np.diag([0.9, 0.9, 2.5])
    affine[:3, 3] = [20.0, 25.0, -30.0]
    shape = (50, 50, 24)
    ijk = np.indices(shape).reshape(3, -1)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    # a smooth function of world position: resampling errors stay tiny
    data = (100 + 20 * np.sin(xyz[0] / 15) + 15 * np.cos(xyz[1] / 12) + 10 * np.sin(xyz[2] / 20))
    return nib.Nifti1Image(data.reshape(shape).astype(np.float32), affine)


def test_ras_grid_is_world_aligned_and_covers_the_field_of_view():
    img = _oblique_lps_image()
    affine, shape = ras_grid(img, 1.0)
    assert np.allclose(affine[:3, :3], np.eye(3))
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in img.shape], indexing="ij")).reshape(3, -1)
    world = img.affine[:3, :3] @ corners + img.affine[:3, 3:4]
    grid_world_max = affine[:3, 3] + np.array(shape) - 1
    assert np.all(world.min(axis=1) >= affine[:3, 3] - 1)
    assert np.all(world.max(axis=1) <= grid_world_max + 1)
    assert np.allclose(affine[:3, 3], np.round(affine[:3, 3]))  # lattice on whole millimetres


def test_round_trip_to_the_model_grid_and_back_is_the_identity_in_world_space():
    native = _oblique_lps_image()
    affine, shape = ras_grid(native, 1.0)
    on_grid = resample(native, affine, shape, order=1)
    back = resample_to_native(on_grid, native, order=1)
    assert back.shape == native.shape and np.allclose(back.affine, native.affine)
    inner = (slice(4, -4), slice(4, -4), slice(2, -2))
    error = np.abs(back.get_fdata()[inner] - native.get_fdata()[inner])
    assert np.median(error) < 0.5 and error.max() < 3.0  # values 55-145


def test_labels_resample_with_nearest_neighbour_and_keep_their_type(tmp_path):
    native = _oblique_lps_image()
    affine, shape = ras_grid(native, 1.0)
    labels = np.zeros(shape, np.uint8)
    labels[10:30, 10:30, 10:30] = 3
    labels[30:40, 10:30, 10:30] = 2
    labels_img = nib.Nifti1Image(labels, affine)
    nib.save(labels_img, tmp_path / "dseg.nii.gz")
    nib.save(native, tmp_path / "t1w.nii.gz")
    back = resample_to_native(tmp_path / "dseg.nii.gz", tmp_path / "t1w.nii.gz", order=0)
    assert back.get_data_dtype() == np.uint8
    assert set(np.unique(np.asanyarray(back.dataobj))) <= {0, 2, 3}


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = ("import sys, demist_bids.preprocessing; "
            "print(sorted(m for m in ('torch', 'nipype', 'SimpleITK', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
