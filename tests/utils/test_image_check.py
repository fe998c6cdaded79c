"""check_image_file: damaged and hostile images are refused from the header and byte stream alone."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from demist_bids.exceptions import BadDataError
from demist_bids.utils.image_check import DEFAULT_MAX_VOXELS, check_image_file, check_image_files

from .damaged import header_only, truncated_gzip, write_image


def test_default_limit_is_512_cubed():
    assert DEFAULT_MAX_VOXELS == 512**3


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii"])
def test_valid_image_passes_without_reading_voxels(tmp_path, name):
    img = check_image_file(write_image(tmp_path / name))
    assert img.shape == (40, 40, 40)
    assert not img.in_memory


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_gzip_is_refused_naming_the_file(tmp_path, keep):
    path = truncated_gzip(tmp_path / "sub-01_FLAIR.nii.gz", keep)
    with pytest.raises(BadDataError, match=rf"^{path}: the compressed stream ends early"):
        check_image_file(path)


@pytest.mark.parametrize("name", ["big.nii.gz", "big.nii"])
def test_header_promising_more_bytes_than_the_file_holds(tmp_path, name):
    path = header_only(tmp_path / name, shape=(256, 256, 256))
    tracemalloc.start()
    try:
        with pytest.raises(BadDataError, match=rf"^{path}: its header promises 16,777,216 voxels"):
            check_image_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the promised 64 MiB array is never made


def test_voxel_count_over_the_limit(tmp_path):
    path = header_only(tmp_path / "huge.nii.gz")
    with pytest.raises(BadDataError, match=r"2000x2000x2000 = 8,000,000,000 voxels, more than "
                                           r"the limit of 134,217,728"):
        check_image_file(path)
    small = write_image(tmp_path / "small.nii.gz")
    with pytest.raises(BadDataError, match="more than the limit of 1,000"):
        check_image_file(small, max_voxels=1000)


def test_corrupt_gzip_and_missing_files(tmp_path):
    path = write_image(tmp_path / "a.nii.gz")
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # a wrong CRC in the gzip trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(BadDataError, match=rf"^{path}: the compressed stream is corrupt"):
        check_image_file(path)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(BadDataError, match=rf"^{garbage}: cannot be read as an image"):
        check_image_file(garbage)
    with pytest.raises(BadDataError, match="nope.nii.gz: file not found"):
        check_image_files([None, tmp_path / "nope.nii.gz"])


def test_directories_and_negative_sizes(tmp_path):
    folder = tmp_path / "sub-01_T1w.nii.gz"
    folder.mkdir()
    with pytest.raises(BadDataError, match=rf"^{folder}: not a regular file"):
        check_image_file(folder)
    path = header_only(tmp_path / "negative.nii", shape=(40, 40, 40))
    raw = bytearray(path.read_bytes())
    raw[42:44] = (-5).to_bytes(2, "little", signed=True)  # dim[1]
    path.write_bytes(bytes(raw))
    with pytest.raises(BadDataError, match="negative size"):
        check_image_file(path)
