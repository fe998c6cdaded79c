"""Check an image file before anything reads its voxels.

nibabel reads a header lazily and trusts it: a header promising 2000^3 float32
voxels makes the first voxel read allocate 32 GB, and a gzip stream cut short
surfaces as an ``EOFError`` deep inside a workflow node. :func:`check_image_file`
reads only the header, then counts the bytes the data stream really holds
(decompressing in chunks and keeping none of them), so an unusable file is
refused with exit 65, naming it, before any array is made. Every entry point
that reads images (participant, train, group, the phantom reader) calls it first.
"""

from __future__ import annotations

import bz2
import gzip
import os
import zlib
from collections.abc import Iterable
from math import prod
from pathlib import Path

from demist_bids.config import ExecutionConfig
from demist_bids.exceptions import BadDataError

DEFAULT_MAX_VOXELS: int = ExecutionConfig.max_image_voxels
"""The typed config's default limit (``--max-image-voxels``)."""

_CHUNK = 1 << 20
_OPENERS = {".gz": gzip.open, ".mgz": gzip.open, ".bz2": bz2.open}
"""Compressed data files by suffix; others are read as stored."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stream_bytes(path: Path, needed: int) -> int:
    """Bytes the file's data stream holds, read up to a little past ``needed``.

    Reading past ``needed`` reaches the end-of-stream marker of a normal file,
    so a stream cut anywhere (even in its trailer) is found.

    Raises:
        BadDataError: the compressed stream ends early or is corrupt.
    """
    opener = _OPENERS.get(path.suffix.lower())
    if opener is None:
        return path.stat().st_size
    total = 0
    try:
        with opener(path, "rb") as stream:
            while total <= needed + _CHUNK:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
    except EOFError as exc:
        raise BadDataError(
            f"{path}: the compressed stream ends early (a truncated file; its header promises "
            f"{needed:,} bytes)"
        ) from exc
    except (OSError, zlib.error) as exc:
        raise BadDataError(f"{path}: the compressed stream is corrupt ({_first_line(exc)})") from exc
    return total


def check_image_file(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS):
    """Refuse an image whose header or byte stream cannot deliver its voxels.

    Args:
        path: the image file.
        max_voxels: largest voxel count (all dimensions) the header may declare.

    Returns:
        The nibabel image, its voxels not yet read.

    Raises:
        BadDataError: ``"<path>: <what>"`` when the file is missing, its header
            cannot be read, it declares more than ``max_voxels`` voxels, or its
            data stream is truncated, corrupt or shorter than the header promises.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise BadDataError(f"{path}: {'not a regular file' if path.exists() else 'file not found'}")
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        itemsize = img.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises many types for damaged headers
        raise BadDataError(f"{path}: cannot be read as an image ({_first_line(exc)})") from exc
    if any(s < 0 for s in shape):
        raise BadDataError(f"{path}: its header declares a negative size {shape}")
    voxels = prod(shape)
    if voxels > max_voxels:
        raise BadDataError(
            f"{path}: its header declares {'x'.join(map(str, shape))} = {voxels:,} voxels, "
            f"more than the limit of {max_voxels:,} (--max-image-voxels)"
        )
    data_file = getattr(img.dataobj, "file_like", None)
    offset = getattr(img.dataobj, "offset", None)
    if not isinstance(data_file, (str, os.PathLike)) or offset is None:
        return img  # not backed by a file on disk: nothing to count
    needed = int(offset) + voxels * itemsize
    held = _stream_bytes(Path(data_file), needed)
    if held < needed:
        raise BadDataError(
            f"{path}: its header promises {voxels:,} voxels of {img.get_data_dtype()} "
            f"({needed:,} bytes with the header) but the file holds {held:,} bytes"
        )
    return img


def check_image_files(paths: Iterable[str | Path | None], max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    """:func:`check_image_file` on each path given (None entries, absent optional inputs, are skipped)."""
    for path in paths:
        if path is not None:
            check_image_file(path, max_voxels)
