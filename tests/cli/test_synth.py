"""``demist-synth``: the participant level's exit codes, a one-line message naming the file, and
nothing written under OUT_PREFIX when it fails (a successful run: tests/test_api.py)."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from demist_bids.cli.run import synth
from tests.utils.damaged import blob, truncated_gzip, write_image


def _pair(tmp_path, flair_data=None, flair_affine=None):
    t1w = write_image(tmp_path / "in" / "t1w.nii.gz")
    flair = tmp_path / "in" / "flair.nii.gz"
    img = nib.Nifti1Image(blob() if flair_data is None else flair_data,
                          np.eye(4) if flair_affine is None else flair_affine)
    nib.save(img, str(flair))
    return t1w, flair


def _nothing_written(prefix) -> bool:
    return not prefix.parent.exists()  # not even the folder


def test_4d_flair_is_65_naming_it(tmp_path, errors):
    t1w, flair = _pair(tmp_path, flair_data=np.stack([blob()] * 2, axis=-1))
    prefix = tmp_path / "out" / "sub-01"
    assert synth([str(t1w), str(flair), str(prefix)]) == 65
    assert f"{flair}: a 4D image with 2 volumes" in errors()
    assert _nothing_written(prefix)


def test_no_overlap_is_65_naming_the_flair(tmp_path, errors):
    far = np.eye(4)
    far[:3, 3] = -500.0
    t1w, flair = _pair(tmp_path, flair_affine=far)
    prefix = tmp_path / "out" / "sub-01"
    assert synth([str(t1w), str(flair), str(prefix)]) == 65
    assert f"{flair}: its field of view covers only 0%" in errors()
    assert _nothing_written(prefix)


def test_truncated_t1w_is_65(tmp_path, errors):
    _, flair = _pair(tmp_path)
    t1w = truncated_gzip(tmp_path / "in" / "cut.nii.gz")
    prefix = tmp_path / "out" / "x"
    assert synth([str(t1w), str(flair), str(prefix)]) == 65
    assert str(t1w) in errors() and "truncated" in errors()
    assert _nothing_written(prefix)


def test_missing_flair_is_66(tmp_path, errors):
    t1w, _ = _pair(tmp_path)
    prefix = tmp_path / "out" / "x"
    assert synth([str(t1w), str(tmp_path / "nope.nii.gz"), str(prefix)]) == 66
    assert f"{tmp_path / 'nope.nii.gz'}: file not found" in errors()
    assert _nothing_written(prefix)


def test_usage_errors_are_64(tmp_path, errors):
    t1w, flair = _pair(tmp_path)
    assert synth([str(t1w), str(flair), str(tmp_path / "o"), "--samples", "0"]) == 64
    assert synth([str(t1w), str(flair), str(tmp_path / "o"), "--bogus"]) == 64
    not_a_model = tmp_path / "empty_model"
    not_a_model.mkdir()
    assert synth([str(t1w), str(flair), str(tmp_path / "o" / "x"), "--model", str(not_a_model)]) == 64
    assert "--model" in errors() or str(not_a_model) in errors()
    assert _nothing_written(tmp_path / "o" / "x")


def test_unwritable_output_is_73(tmp_path, errors):
    t1w, flair = _pair(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert synth([str(t1w), str(flair), str(blocker / "sub" / "x")]) == 73
    assert f"{blocker} is not a writable directory" in errors()


def test_help_does_not_import_torch():
    code = ("import sys; from demist_bids.cli.synth import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    proc = subprocess.run(["demist-synth", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "OUT_PREFIX" in proc.stdout
