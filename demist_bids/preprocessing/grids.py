"""The model's grid (1 mm, RAS, world-aligned, covering the T1w) and resampling to/from it.

Both the model grid and the native T1w grid live in the same world space, so
going between them is a plain resampling with the identity transform.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from .sitk_bridge import reference_image, to_nibabel, to_sitk

_INTERPOLATORS = {0: "sitkNearestNeighbor", 1: "sitkLinear", 3: "sitkBSpline"}


def ras_grid(img: nib.spatialimages.SpatialImage, voxel_mm: float = 1.0):
    """Affine and shape of a world-aligned RAS grid covering ``img``'s field of view.

    The grid's first voxel sits on a multiple of ``voxel_mm`` in world space,
    so two images of one subject get the same lattice.

    Returns:
        ``(affine, shape)``: a diagonal ``voxel_mm`` affine and a 3-tuple.
    """
    shape = np.asarray(img.shape[:3])
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(3, -1)
    world = img.affine[:3, :3] @ corners + img.affine[:3, 3:4]
    low = np.floor(world.min(axis=1) / voxel_mm + 0.5) * voxel_mm
    high = np.ceil(world.max(axis=1) / voxel_mm - 0.5) * voxel_mm
    new_shape = tuple(int(n) for n in np.round((high - low) / voxel_mm).astype(int) + 1)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = low
    return affine, new_shape


def resample(
    img: nib.spatialimages.SpatialImage,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    *,
    order: int = 1,
    transform=None,
    dtype=np.float32,
) -> nib.Nifti1Image:
    """Resample ``img`` onto the grid ``(affine, shape)``; outside its field of view is 0.

    Args:
        img: the image to resample.
        affine, shape: the target grid.
        order: 0 nearest neighbour (labels), 1 linear, 3 B-spline.
        transform: an optional SimpleITK transform mapping target-grid points
            (fixed space) to points of ``img`` (moving space), ITK's convention.
        dtype: output data type.
    """
    import SimpleITK as sitk

    moving = to_sitk(img, dtype=np.float32)
    reference = reference_image(affine, shape)
    interpolator = getattr(sitk, _INTERPOLATORS[order])
    xfm = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    out = sitk.Resample(moving, reference, xfm, interpolator, 0.0, sitk.sitkFloat32)
    data_out = to_nibabel(out)
    if order == 0 or np.issubdtype(dtype, np.integer):
        data = np.rint(np.asanyarray(data_out.dataobj))
        data_out = nib.Nifti1Image(data.astype(dtype), data_out.affine, data_out.header)
        data_out.set_data_dtype(dtype)
    return data_out


def resample_like(
    img: nib.spatialimages.SpatialImage,
    reference: nib.spatialimages.SpatialImage,
    *,
    order: int = 1,
    transform=None,
    dtype=np.float32,
) -> nib.Nifti1Image:
    """Resample ``img`` onto the voxel grid of ``reference`` (see :func:`resample`)."""
    return resample(img, reference.affine, reference.shape[:3], order=order,
                    transform=transform, dtype=dtype)


def resample_to_native(
    img_1mm: nib.spatialimages.SpatialImage,
    t1w_native: nib.spatialimages.SpatialImage,
    order: int = 1,
) -> nib.Nifti1Image:
    """Bring an image on the model's 1 mm grid back to the native T1w grid.

    The transform is the identity in world space (both grids are aligned to the
    T1w). Labels need ``order=0``; they keep their integer data type.

    Args:
        img_1mm: an image on the 1 mm RAS grid (for example the PSR map).
        t1w_native: the validated T1w (``t1w_native`` output of the workflow), or its path.
        order: 0 nearest neighbour, 1 linear, 3 B-spline.

    Returns:
        The image on ``t1w_native``'s grid; float32, or the input's integer type for ``order=0``.
    """
    if isinstance(img_1mm, (str, bytes)) or hasattr(img_1mm, "__fspath__"):
        img_1mm = nib.load(img_1mm)
    if isinstance(t1w_native, (str, bytes)) or hasattr(t1w_native, "__fspath__"):
        t1w_native = nib.load(t1w_native)
    in_dtype = img_1mm.get_data_dtype()
    dtype = in_dtype if order == 0 and np.issubdtype(in_dtype, np.integer) else np.float32
    return resample_like(img_1mm, t1w_native, order=order, dtype=dtype)
