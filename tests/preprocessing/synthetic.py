"""Small synthetic T1w/FLAIR pairs with known geometry, built from the MNI152 maps nilearn ships.

Real anatomy (tissue probability maps) with made-up contrasts, a smooth bias
field, noise, an optional skull and a known rigid FLAIR->T1w motion: enough to
test every step of the preprocessing and to measure its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

# contrast of CSF, GM, WM, scalp, skull
T1W_CONTRAST = (0.25, 0.6, 1.0, 0.9, 0.08)
FLAIR_CONTRAST = (0.05, 0.9, 0.6, 0.6, 0.05)


def _nilearn_maps():
    import nilearn

    base = Path(nilearn.__file__).parent / "datasets" / "data"

    def load(name):
        return nib.load(base / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")

    t1 = load("t1")
    gm = load("gm").get_fdata() / 255.0
    wm = load("wm").get_fdata() / 255.0
    brain = ndi.binary_fill_holes(t1.get_fdata() > 0.2 * 255)
    csf = np.clip(brain - gm - wm, 0, 1) * brain
    return t1.affine, brain, csf, gm, wm


@dataclass
class SyntheticPair:
    t1w: Path
    flair: Path
    brain_mask: Path
    """True brain mask on the T1w grid."""
    flair_to_t1w: np.ndarray
    """4x4 RAS world transform taking T1w world points to FLAIR world points."""


def rigid_matrix(angles_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0, 0.0), center=(0, 0, 0)):
    """4x4 rotation (x, y, z Euler angles) about ``center`` followed by a shift, in RAS world."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    mat = np.eye(4)
    mat[:3, :3] = rz @ ry @ rx
    c = np.asarray(center, float)
    mat[:3, 3] = c - mat[:3, :3] @ c + np.asarray(shift_mm, float)
    return mat


def _sample(volumes, src_affine, dst_affine, shape, world_to_src=np.eye(4), order=1):
    """Sample volumes (on ``src_affine``) at voxels of a grid (``dst_affine``, shape)."""
    vox = np.linalg.inv(src_affine) @ world_to_src @ dst_affine
    return [ndi.affine_transform(v.astype(np.float32), vox[:3, :3], vox[:3, 3], output_shape=shape,
                                 order=order, mode="constant", cval=0.0) for v in volumes]


def make_pair(
    out_dir: Path,
    *,
    voxel_mm=(3.0, 3.0, 3.0),
    flair_voxel_mm=(3.0, 3.0, 3.0),
    skull: bool = True,
    flair_to_t1w: np.ndarray | None = None,
    flair_fov_fraction: float = 1.0,
    bias: float = 0.3,
    noise: float = 0.02,
    seed: int = 0,
    t1w_dtype=np.float32,
    t1w_axcodes: str = "RAS",
) -> SyntheticPair:
    """Write a T1w/FLAIR pair (and the true mask) under ``out_dir``.

    Args:
        voxel_mm / flair_voxel_mm: voxel sizes of each image.
        skull: add scalp and skull around the brain (else a skull-stripped look).
        flair_to_t1w: 4x4 world transform T1w point -> FLAIR point (default identity).
        flair_fov_fraction: keep only this inferior-to-superior fraction of the FLAIR slices
            (the top part), to mimic a partial field of view.
        t1w_axcodes: voxel orientation of the T1w file, e.g. ``"LPS"`` or ``"LAS"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    src_affine, brain, csf, gm, wm = _nilearn_maps()
    if skull:
        inner = ndi.binary_dilation(brain, iterations=4)
        bone = ndi.binary_dilation(inner, iterations=4) & ~inner
        scalp = ndi.binary_dilation(inner, iterations=9) & ~ndi.binary_dilation(inner, iterations=4)
        # pad so the head fits
        pad = 10
        tissues = [np.pad(t.astype(np.float32), pad) for t in (csf, gm, wm, scalp, bone)]
        brain_p = np.pad(brain, pad)
        src_affine = src_affine.copy()
        src_affine[:3, 3] -= pad
        # CSF between brain and bone
        tissues[0] = tissues[0] + (np.pad(inner, pad) & ~brain_p) * 1.0
    else:
        tissues = [t.astype(np.float32) for t in (csf, gm, wm)] + [np.zeros_like(csf)] * 2
        brain_p = brain
    extent = np.array(brain_p.shape) * 1.0

    def grid(vox):
        vox = np.asarray(vox, float)
        shape = tuple(int(s) for s in np.ceil(extent / vox))
        aff = np.diag([*vox, 1.0])
        aff[:3, 3] = src_affine[:3, 3] + (vox - 1) / 2
        return aff, shape

    def contrast(weights, tissues_on_grid, shape, aff):
        img = sum(w * t for w, t in zip(weights, tissues_on_grid))
        ijk = np.indices(shape).reshape(3, -1).T
        xyz = (aff[:3, :3] @ ijk.T).T + aff[:3, 3]
        field = np.exp(bias * np.sin(xyz[:, 0] / 80.0) * np.cos(xyz[:, 2] / 90.0)).reshape(shape)
        img = img * field
        if skull:  # Rician noise everywhere, as in a raw magnitude image
            real = img + noise * rng.standard_normal(shape)
            img = np.hypot(real, noise * rng.standard_normal(shape))
        else:  # skull-stripped look: exact zeros outside the brain
            img = img + noise * rng.standard_normal(shape) * (img > 0)
        return np.clip(img, 0, None).astype(np.float32)

    t1_aff, t1_shape = grid(voxel_mm)
    t1_tissues = _sample(tissues, src_affine, t1_aff, t1_shape)
    t1 = contrast(T1W_CONTRAST, t1_tissues, t1_shape, t1_aff)
    mask = _sample([brain_p], src_affine, t1_aff, t1_shape, order=0)[0] > 0.5

    xfm = np.eye(4) if flair_to_t1w is None else np.asarray(flair_to_t1w)
    fl_aff, fl_shape = grid(flair_voxel_mm)
    # FLAIR voxel -> its world point; the subject's anatomy there is at xfm^-1 @ point in T1w world
    fl_tissues = _sample(tissues, src_affine, fl_aff, fl_shape, world_to_src=np.linalg.inv(xfm))
    flair = contrast(FLAIR_CONTRAST, fl_tissues, fl_shape, fl_aff)
    if flair_fov_fraction < 1.0:
        keep = max(1, int(round(fl_shape[2] * flair_fov_fraction)))
        flair = flair[:, :, -keep:]
        fl_aff = fl_aff.copy()
        fl_aff[:3, 3] += fl_aff[:3, 2] * (fl_shape[2] - keep)

    t1_img = nib.Nifti1Image(t1, t1_aff)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), t1_aff)
    if t1w_axcodes != "RAS":
        ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                               nib.orientations.axcodes2ornt(tuple(t1w_axcodes)))
        t1_img = t1_img.as_reoriented(ornt)
        mask_img = mask_img.as_reoriented(ornt)
    if np.issubdtype(t1w_dtype, np.integer):
        data = np.asanyarray(t1_img.dataobj) * 1000
        t1_img = nib.Nifti1Image(np.rint(data).astype(t1w_dtype), t1_img.affine)
    paths = SyntheticPair(out_dir / "T1w.nii.gz", out_dir / "FLAIR.nii.gz",
                          out_dir / "brainmask.nii.gz", xfm)
    for img, path in ((t1_img, paths.t1w), (nib.Nifti1Image(flair, fl_aff), paths.flair),
                      (mask_img, paths.brain_mask)):
        img.set_qform(img.affine, 1)
        img.set_sform(img.affine, 1)
        nib.save(img, path)
    return paths


# Session-wide pairs shared by the preprocessing, interface and workflow tests
# (import the fixture into a test module to use it).
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def head_pair(tmp_path_factory) -> SyntheticPair:
    """3 mm T1w with skull and noise; 3 mm FLAIR moved by 4-5 degrees and 3-4 mm."""
    motion = rigid_matrix((4.0, -3.0, 5.0), (3.0, -4.0, 2.0), center=(0.0, -18.0, 18.0))
    return make_pair(tmp_path_factory.mktemp("head"), flair_to_t1w=motion, seed=1)


@pytest.fixture(scope="session")
def stripped_pair(tmp_path_factory) -> SyntheticPair:
    """3 mm skull-stripped T1w/FLAIR (zeros outside the brain), FLAIR aligned."""
    return make_pair(tmp_path_factory.mktemp("stripped"), skull=False, seed=2)
