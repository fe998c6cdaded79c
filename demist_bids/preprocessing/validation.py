"""Checks and fixes that make a raw anatomical image usable, or refuse it.

:func:`check_image` reads only what it needs and says which fixes an image will
get (so the command line can refuse bad data with exit 65 *before* building a
workflow); :func:`load_validated` applies exactly those fixes. Both share one
list of rules so that what is announced is what is done.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from ..exceptions import BadDataError
from ..utils.image_check import DEFAULT_MAX_VOXELS, check_image_file

LOGGER = logging.getLogger("demist.preprocessing")

MIN_VOXELS_PER_AXIS = 8
"""Fewer voxels than this along any spatial axis is a 2D image (or a localizer)."""
MIN_EXTENT_MM = 30.0
"""Fewer millimetres than this along any axis cannot hold a brain."""
MIN_FLAIR_COVERAGE = 0.5
"""Smallest fraction of the T1w brain (head before registration) the FLAIR must cover."""


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[str]]:
    """Return the 3D shape and the fixes a 4D/5D image needs; raise when it has several volumes."""
    fixes: list[str] = []
    if len(shape) < 3 or any(s <= 1 for s in shape[:3]):
        raise BadDataError(f"{path}: a 2D image (shape {shape}); a 3D volume is needed")
    extra = shape[3:]
    if any(s > 1 for s in extra):
        raise BadDataError(
            f"{path}: a 4D image with {int(np.prod(extra))} volumes (shape {shape}); "
            "give one 3D volume"
        )
    if extra:
        fixes.append(f"squeezed a {len(shape)}D image with one volume to 3D")
    return tuple(shape[:3]), fixes


def _header_fixes(img: nib.Nifti1Image) -> tuple[np.ndarray, list[str]]:
    """Pick the affine to trust (sform, then qform, then base) and say what was repaired.

    Follows the logic of niworkflows' ``ValidateImage``: a valid sform wins; a
    qform alone is copied to the sform; neither means the voxel sizes alone.
    """
    hdr = img.header
    fixes: list[str] = []
    sform, scode = img.get_sform(coded=True)
    qform, qcode = img.get_qform(coded=True)
    if scode and sform is not None and np.all(np.isfinite(sform)):
        affine = sform
        if not qcode or qform is None or not np.allclose(qform, sform, atol=1e-4):
            fixes.append("qform did not match the sform: rewrote the qform from the sform")
    elif qcode and qform is not None and np.all(np.isfinite(qform)):
        affine = qform
        fixes.append("no valid sform: copied the qform to the sform")
    else:
        zooms = np.array(hdr.get_zooms()[:3], dtype=float)
        affine = np.diag([*zooms, 1.0])
        fixes.append("neither qform nor sform set: assumed a RAS grid from the voxel sizes")
    rot = affine[:3, :3]
    if not np.all(np.isfinite(rot)) or abs(np.linalg.det(rot)) < 1e-8:
        raise BadDataError("the affine is singular")
    # qform cannot hold shear; replace a sheared affine with the nearest one without shear
    zooms = np.linalg.norm(rot, axis=0)
    u, _, vt = np.linalg.svd(rot / zooms)
    ortho = u @ vt
    if not np.allclose(ortho * zooms, rot, atol=1e-4):
        fixes.append("affine had shear: replaced by the nearest rotation (voxel sizes kept)")
        affine = affine.copy()
        affine[:3, :3] = ortho * zooms
    return affine, fixes


def _grid_notes(affine: np.ndarray, shape: tuple[int, ...]) -> list[str]:
    """Human-readable notes on orientation, obliquity and anisotropy (resampled later)."""
    notes = []
    codes = "".join(nib.aff2axcodes(affine))
    if codes != "RAS":
        notes.append(f"reoriented {codes} to RAS")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    cosines = np.abs(affine[:3, :3] / zooms).max(axis=0)
    oblique = bool(np.any(cosines < 1 - 1e-3))
    if oblique:
        angle = float(np.degrees(np.arccos(min(cosines.min(), 1.0))))
        notes.append(f"oblique grid ({angle:.1f} deg) resampled to the 1 mm RAS grid")
    if not np.allclose(zooms, 1.0, atol=1e-3) and not oblique:
        size = "x".join(f"{z:.2f}" for z in zooms)
        notes.append(f"{size} mm voxels resampled to 1 mm isotropic")
    extent = zooms * np.asarray(shape[:3])
    if np.any(extent < MIN_EXTENT_MM):
        raise BadDataError(f"field of view {extent.round(1).tolist()} mm is too small for a brain")
    if min(shape[:3]) < MIN_VOXELS_PER_AXIS:
        raise BadDataError(f"only {min(shape[:3])} voxels along one axis: a 2D or slab image")
    return notes


def _data_fixes(data: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Replace non-finite values and negative values with 0; refuse empty images."""
    fixes: list[str] = []
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, 0.0, data)
        fixes.append(f"replaced {int(bad.sum())} NaN/Inf voxels with 0")
    if not np.any(data):
        raise BadDataError("all voxels are zero")
    if float(data.max()) == float(data.min()):
        raise BadDataError("the image is constant")
    negative = data < 0
    if negative.any():
        fixes.append(
            f"clipped {int(negative.sum())} negative voxels (min {float(data.min()):.3g}) to 0"
        )
        data = np.where(negative, 0.0, data)
        if not np.any(data):
            raise BadDataError("no positive voxels")
    return data, fixes


def load_validated(
    path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[nib.Nifti1Image, list[str]]:
    """Load an anatomical image as a clean 3D float32 NIfTI on its own voxel grid.

    Args:
        path: the raw image.
        max_voxels: largest voxel count its header may declare (see
            :func:`~demist_bids.utils.image_check.check_image_file`).

    Returns:
        The image (qform == sform, code 1 when unset; no NaN, no negatives;
        original voxel order) and the human-readable list of fixes and notes.

    Raises:
        BadDataError: naming ``path``, when the image cannot be used.
    """
    path = Path(path)
    img = check_image_file(path, max_voxels)
    try:
        shape, fixes = _spatial_shape(path, img.shape)
        affine, header_fixes = _header_fixes(img)
        notes = _grid_notes(affine, shape)
        data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(shape)
        data, data_fixes = _data_fixes(data)
    except BadDataError as exc:
        message = str(exc)
        named = message if message.startswith(str(path)) else f"{path}: {message}"
        raise BadDataError(named) from exc
    out = nib.Nifti1Image(data.astype(np.float32), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm")
    return out, fixes + header_fixes + data_fixes + notes


def check_image(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS) -> list[str]:
    """Say which fixes an anatomical image will need; raise when it is unusable.

    Cheap enough to call for every input before a workflow is built.

    Args:
        path: the raw image.
        max_voxels: largest voxel count its header may declare.

    Returns:
        The fixes/notes, exactly as :func:`load_validated` will record them.

    Raises:
        BadDataError: ``"<path>: <what>"`` for 2D images, several volumes, all-zero
            or constant images, unreadable, truncated or oversized files and singular affines.
    """
    return load_validated(path, max_voxels)[1]


def header_coverage(t1w: nib.spatialimages.SpatialImage,
                    flair: nib.spatialimages.SpatialImage) -> float:
    """Fraction of the T1w's head (Otsu-like foreground) inside the FLAIR's field of view.

    Uses only the headers' world coordinates (same-session scans share the
    scanner's frame), so it is cheap; the registered value over the brain is in
    the workflow's ``qc`` JSON.
    """
    data = np.asanyarray(t1w.dataobj, dtype=np.float32)
    step = max(1, int(round(min(data.shape) / 48)))  # a coarse sample is plenty
    sample = np.nan_to_num(data[::step, ::step, ::step])
    positive = sample[sample > 0]
    if positive.size == 0:
        return 0.0
    head = sample > 0.2 * np.percentile(positive, 98)
    ijk = np.argwhere(head) * step
    world = t1w.affine[:3, :3] @ ijk.T + t1w.affine[:3, 3:4]
    flair_ijk = np.linalg.inv(flair.affine) @ np.vstack([world, np.ones(world.shape[1])])
    shape = np.asarray(flair.shape[:3])[:, None]
    inside = np.all((flair_ijk[:3] >= -0.5) & (flair_ijk[:3] <= shape - 0.5), axis=0)
    return float(inside.mean())


def check_pair(t1w_path: str | Path, flair_path: str | Path,
               min_coverage: float = MIN_FLAIR_COVERAGE,
               max_voxels: int = DEFAULT_MAX_VOXELS) -> list[str]:
    """Check a T1w/FLAIR pair before processing; return both images' fixes, prefixed.

    Raises:
        BadDataError: either image is unusable (see :func:`check_image`), or the
            FLAIR's field of view holds less than ``min_coverage`` of the T1w head
            (message names the FLAIR file).
    """
    t1w, t1w_fixes = load_validated(t1w_path, max_voxels)
    flair, flair_fixes = load_validated(flair_path, max_voxels)
    coverage = header_coverage(t1w, flair)
    if coverage < min_coverage:
        raise BadDataError(
            f"{flair_path}: its field of view covers only {coverage:.0%} of the T1w head "
            f"(at least {min_coverage:.0%} needed)"
        )
    return [f"T1w: {f}" for f in t1w_fixes] + [f"FLAIR: {f}" for f in flair_fixes]
