"""Damaged and hostile inputs: a clean exit naming the file, no traceback, nothing written.

Images (participant, train, group, the phantom reader) are checked from their
header and byte stream before any voxel is read (:mod:`demist_bids.utils.image_check`),
so a header promising 2000^3 float32 voxels over a few bytes never allocates its
array: exit 65. A ``--model`` directory is checked before anything is built from
it (:mod:`demist_bids.models.validation`): exit 64.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_exit_codes import _errors, _propagate, _run, logs  # noqa: F401 (fixtures)
from tests.utils.damaged import header_only, truncated_gzip, write_image


def _dataset(root: Path) -> Path:
    """A one-subject BIDS dataset with a valid T1w and FLAIR."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "damaged", "BIDSVersion": "1.9.0"}))
    for suffix in ("T1w", "FLAIR"):
        write_image(root / "sub-01" / "anat" / f"sub-01_{suffix}.nii.gz")
    return root


def _written_under_subjects(out: Path) -> list[Path]:
    return [p for folder in out.glob("sub-*") if folder.is_dir() for p in folder.rglob("*")]


DAMAGES = {
    "truncated-gzip-flair": lambda anat: truncated_gzip(anat / "sub-01_FLAIR.nii.gz"),
    "2000-cubed-float32-t1w": lambda anat: header_only(anat / "sub-01_T1w.nii.gz"),
    "more-bytes-promised-than-held": lambda anat: header_only(
        anat / "sub-01_FLAIR.nii.gz", shape=(256, 256, 256)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_participant_damaged_image_is_65_naming_it(tmp_path, logs, damage):
    bids = _dataset(tmp_path / "bids")
    bad = DAMAGES[damage](bids / "sub-01" / "anat")
    out = tmp_path / "out"
    code = _run([bids, out, "participant", "--skip-bids-validation", "-w", tmp_path / "w"], logs)
    assert code == 65
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert any(str(bad) in r.getMessage() and "\n" not in r.getMessage() for r in errors)
    assert not any(r.exc_info for r in logs.records)
    assert "Traceback" not in logs.text
    assert _written_under_subjects(out) == []
    about = (out / "sub-01.html").read_text().split("id='about'")[1]  # this run, in memory only
    assert "Run ID" in about and "--skip-bids-validation" in about


def test_voxel_limit_is_configurable(tmp_path, logs):
    bids = _dataset(tmp_path / "bids")
    out = tmp_path / "out"
    code = _run([bids, out, "participant", "--skip-bids-validation", "-w", tmp_path / "w",
                 "--max-image-voxels", "1000"], logs)
    assert code == 65
    assert "sub-01_T1w.nii.gz: its header declares 40x40x40 = 64,000 voxels, more than the " \
           "limit of 1,000" in _errors(logs)
    configs = list((out / "logs").glob("config-*.toml"))
    assert "max_image_voxels = 1000" in configs[0].read_text()


def test_truncated_flair_through_the_console_script(tmp_path):
    """As a user runs it: one error line naming the file on stderr, no traceback."""
    bids = _dataset(tmp_path / "bids")
    flair = truncated_gzip(bids / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "demist_bids", str(bids), str(out), "participant",
         "--skip-bids-validation", "-w", str(tmp_path / "w")], capture_output=True, text=True)
    assert proc.returncode == 65, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if str(flair) in line]
    assert len(lines) == 1 and "[ERROR]" in lines[0] and "ends early" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _written_under_subjects(out) == []


def _psr_derivatives(bids: Path) -> Path:
    root = bids / "derivatives" / "qmt"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "qmt", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "qmt-fit"}]}))
    return root


@pytest.mark.parametrize("damage", ["truncated-psr", "2000-cubed-flair"])
def test_train_damaged_image_is_65_before_any_work(tmp_path, logs, damage):
    bids = _dataset(tmp_path / "bids")
    psr_root = _psr_derivatives(bids)
    psr = write_image(psr_root / "sub-01" / "anat" / "sub-01_PSRmap.nii.gz")
    bad = truncated_gzip(psr) if damage == "truncated-psr" else \
        header_only(bids / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
    out = tmp_path / "out"
    code = _run([bids, out, "train", "--psr-derivatives", psr_root, "--skip-bids-validation",
                 "-w", tmp_path / "w", "--folds", "1"], logs)
    assert code == 65
    assert f"{bad}: " in _errors(logs)
    assert "Traceback" not in logs.text
    assert not (out / "model").exists() and not (tmp_path / "w" / "train_preproc").exists()


def test_phantom_reader_refuses_a_truncated_template(tmp_path, monkeypatch, capsys):
    from demist_bids.phantom import cli, template

    broken = tmp_path / "nilearn-data"
    bad = truncated_gzip(broken / template.TEMPLATE_NAME.format("t1"))
    monkeypatch.setattr(template, "template_dir", lambda: broken)
    template.canonical_head.cache_clear()
    try:
        with pytest.raises(SystemExit) as done:
            cli.main([str(tmp_path / "cohort"), "--subjects", "1", "--seed", "0"])
    finally:
        template.canonical_head.cache_clear()
    assert done.value.code == 65
    err = capsys.readouterr().err
    assert f"{bad}: the compressed stream ends early" in err and "Traceback" not in err
    assert not list((tmp_path / "cohort").glob("sub-*"))


# -- --model: checked before any work (exit 64) --------------------------------------------


def _demo_copy(tmp_path: Path) -> Path:
    from demist_bids.data import demo_model_dir

    return shutil.copytree(demo_model_dir(), tmp_path / "model")


def _random_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def _without_weights(tmp_path: Path) -> Path:
    model = _demo_copy(tmp_path)
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    return model


def _absurd_channels(tmp_path: Path) -> Path:
    model = _demo_copy(tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["unet"]["channels"] = [32, 65536, 64]
    (model / "config.json").write_text(json.dumps(config))
    return model


def _mismatched_weights(tmp_path: Path) -> Path:
    model = _demo_copy(tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["streams"]["token_dim"] = 96  # within bounds, but not what the weights hold
    (model / "config.json").write_text(json.dumps(config))
    return model


def _altered_weights(tmp_path: Path) -> Path:
    model = _demo_copy(tmp_path)
    weights = model / "streams.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x40
    weights.write_bytes(bytes(data))
    return model


MODELS = {
    "a-file-of-random-bytes": (_random_file, r"not a directory; a model directory holds config\.json"),
    "no-weights": (_without_weights, r"it has no psr_autoencoder\.safetensors, .*; a model directory "
                                     r"holds config\.json and the weights"),
    "absurd-channels": (_absurd_channels, r"config\.json: field unet\.channels = \[32, 65536, 64\] "
                                          r"is not a sane model size"),
    "weights-not-matching": (_mismatched_weights, r"streams\.safetensors: the weights do not match "
                                                  r"config\.json"),
    "checksum-differs": (_altered_weights, r"streams\.safetensors: its SHA256 .* differs from .* "
                                           r"recorded in SHA256SUMS"),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_bad_model_is_64_before_any_work(tmp_path, logs, case):
    make, message = MODELS[case]
    model = make(tmp_path)
    bids = _dataset(tmp_path / "bids")
    out = tmp_path / "out"
    code = _run([bids, out, "participant", "--skip-bids-validation", "-w", tmp_path / "w",
                 "--model", model], logs)
    assert code == 64
    errors = _errors(logs)
    assert str(model) in errors and re.search(message, errors), errors
    assert "Traceback" not in logs.text
    assert [p.name for p in out.iterdir()] == ["logs"]
