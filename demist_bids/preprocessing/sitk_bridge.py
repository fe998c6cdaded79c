"""Lossless conversion between nibabel (RAS world) and SimpleITK (LPS world) images.

Building SimpleITK images from arrays, instead of letting each library parse the
NIfTI header its own way, guarantees both see the same world coordinates.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_sitk(img: nib.spatialimages.SpatialImage, dtype=np.float32):
    """Return a SimpleITK image with the same voxels and world geometry as ``img``."""
    import SimpleITK as sitk

    data = np.asanyarray(img.dataobj).astype(dtype, copy=False)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
    lps = RAS_TO_LPS @ img.affine
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    out.SetSpacing(tuple(float(z) for z in zooms))
    out.SetDirection(tuple(float(v) for v in (lps[:3, :3] / zooms).ravel()))
    out.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return out


def affine_of(image) -> np.ndarray:
    """RAS voxel-to-world affine of a SimpleITK image."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return RAS_TO_LPS @ lps


def to_nibabel(image, dtype=np.float32) -> nib.Nifti1Image:
    """Return a NIfTI image (qform == sform, code 1) for a SimpleITK image."""
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(image).T.astype(dtype, copy=False)
    affine = affine_of(image)
    out = nib.Nifti1Image(data, affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm")
    return out


def reference_image(affine: np.ndarray, shape: tuple[int, int, int]):
    """An empty SimpleITK image that only carries a grid (for resampling onto it)."""
    import SimpleITK as sitk

    lps = RAS_TO_LPS @ affine
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    ref = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    ref.SetSpacing(tuple(float(z) for z in zooms))
    ref.SetDirection(tuple(float(v) for v in (lps[:3, :3] / zooms).ravel()))
    ref.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return ref
