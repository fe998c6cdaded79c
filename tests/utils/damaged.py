"""Damaged and hostile image files, built in a test's tmp_path.

Shared by the unit tests of :mod:`demist_bids.utils.image_check` and by the
exit-code tests of every level that reads images.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np


def blob(shape=(40, 40, 40)) -> np.ndarray:
    """A smooth positive blob: a valid anatomical image on a 1 mm grid."""
    grid = np.indices(shape).astype(np.float32)
    center = (np.array(shape) - 1) / 2.0
    r2 = sum(((g - c) / (s / 3)) ** 2 for g, c, s in zip(grid, center, shape))
    return (100.0 * np.exp(-r2)).astype(np.float32)


def write_image(path: Path, data: np.ndarray | None = None) -> Path:
    """A valid image (default: :func:`blob`) with qform and sform set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(blob() if data is None else data, np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, str(path))
    return path


def truncated_gzip(path: Path, keep: float = 0.5) -> Path:
    """A valid .nii.gz whose gzip stream is cut after ``keep`` of its bytes."""
    write_image(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def header_only(path: Path, shape=(2000, 2000, 2000), dtype=np.float32) -> Path:
    """A NIfTI header promising ``shape`` voxels of ``dtype`` over a few bytes of data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    data = header.binaryblock + b"\0" * 4 + b"a few bytes"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path
