"""check_model_dir / check_model_config: a model directory is refused (64) before anything is built."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from demist_bids.exceptions import UsageError
from demist_bids.models.config import preset
from demist_bids.models.demist import build_model
from demist_bids.models.io import load_model, save_model
from demist_bids.models.validation import check_model_config, check_model_dir
from demist_bids.utils.model_files import WEIGHTS_SUMS, file_sha256, read_weights_sums
from tests.models.tiny import tiny_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model(tiny_config("full")), tmp_path_factory.mktemp("m") / "model")


@pytest.fixture
def model_dir(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "model")


def _edit_config(directory, **changes):
    path = directory / "config.json"
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = data
        for parent in parents:
            node = node[parent]
        node[key] = value
    path.write_text(json.dumps(data))


def test_presets_and_saved_models_pass(saved):
    for name in ("paper", "small"):
        check_model_config(preset(name), "preset")
    assert check_model_dir(saved).preset == "small"
    sums = read_weights_sums(saved)
    assert sorted(sums) == sorted(p.name for p in saved.glob("*.safetensors"))
    assert all(file_sha256(saved / name) == digest for name, digest in sums.items())


ABSURD = {
    "autoencoder__channels": ([8, 4096, 16], "autoencoder.channels"),
    "unet__channels": ([16, 32, 32, 32, 32, 32], "unet.channels"),
    "autoencoder__latent_channels": (100000, "autoencoder.latent_channels"),
    "streams__token_grid": ([1000, 2, 2], "streams.token_grid"),
    "streams__lora_rank": (1 << 20, "streams.lora_rank"),
    "streams__token_stride": (-2, "streams.token_stride"),
    "patch_size": ([32, 32, 4096], "patch_size"),
    "unet__num_res_blocks": ("2", "unet.num_res_blocks"),
}


@pytest.mark.parametrize("change", sorted(ABSURD))
def test_absurd_sizes_are_refused_naming_the_field(model_dir, change):
    value, field = ABSURD[change]
    _edit_config(model_dir, **{change: value})
    with pytest.raises(UsageError, match=rf"config\.json: field {field} = .* is not a sane model size"):
        check_model_dir(model_dir)
    with pytest.raises(UsageError, match=field):  # load_model refuses it before building anything
        load_model(model_dir)


def test_an_unknown_unconditional_branch_is_refused(model_dir):
    _edit_config(model_dir, sampling__unconditional="streams")
    with pytest.raises(UsageError, match=r"field sampling\.unconditional = 'streams': expected one of backbone, adapted"):
        load_model(model_dir)


def test_weights_not_matching_the_config(model_dir):
    _edit_config(model_dir, autoencoder__latent_channels=4)
    with pytest.raises(UsageError, match=r"psr_autoencoder\.safetensors: the weights do not match "
                                         r"config\.json: .* has shape"):
        check_model_dir(model_dir)


def test_inconsistent_sizes_that_cannot_be_built(model_dir):
    _edit_config(model_dir, autoencoder__norm_num_groups=3)  # does not divide 8 channels
    with pytest.raises(UsageError, match="the networks it describes cannot be built"):
        check_model_dir(model_dir)


def test_checksum_differing_from_the_recorded_one(model_dir):
    path = model_dir / "backbone.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight: the header and shapes are still fine
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=rf"{path}: its SHA256 .* differs from the .* recorded "
                                         rf"in {WEIGHTS_SUMS}"):
        check_model_dir(model_dir)


def test_layout_errors_say_what_a_model_directory_holds(model_dir, tmp_path):
    (model_dir / "streams.safetensors").unlink()
    with pytest.raises(UsageError, match="it has no streams.safetensors; a model directory holds "
                                         "config.json and the weights"):
        check_model_dir(model_dir)
    (model_dir / "config.json").unlink()
    with pytest.raises(UsageError, match="it has no config.json"):
        check_model_dir(model_dir)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(UsageError, match=rf"--model {junk}: not a directory"):
        check_model_dir(junk)


def test_garbage_config_and_weights(model_dir):
    (model_dir / "backbone.safetensors").write_bytes(b"\xff" * 64)
    (model_dir / WEIGHTS_SUMS).unlink()  # an older model: no checksums recorded, shapes still checked
    with pytest.raises(UsageError, match="backbone.safetensors: not a safetensors weights file"):
        check_model_dir(model_dir)
    (model_dir / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UsageError, match="config.json: not a demist model configuration"):
        check_model_dir(model_dir)


def test_a_student_is_checked_too(model_dir, saved):
    student = shutil.copytree(saved, model_dir / "student")
    _edit_config(student, streams__lora_rank=100000)
    with pytest.raises(UsageError, match="student/config.json: field streams.lora_rank"):
        check_model_dir(model_dir)


def test_meta_build_allocates_nothing():
    """The paper preset (210 M parameters, 0.8 GB of float32) is checked in a few MB."""
    script = (
        "import resource, sys\n"
        "from demist_bids.models.config import preset\n"
        "from demist_bids.models.validation import _expected_shapes\n"
        "import demist_bids.models.demist, demist_bids.models.io\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "shapes = _expected_shapes(preset('paper'), 'paper')\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(sum(len(v) for v in shapes.values()), grown // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    tensors, grown_mb = map(int, proc.stdout.split())
    assert tensors > 500 and grown_mb < 200


def test_unreadable_weights_are_a_usage_error(model_dir, monkeypatch):
    import demist_bids.utils.model_files as model_files

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(model_files, "file_sha256", unreadable)
    with pytest.raises(UsageError, match=rf"--model {model_dir}: cannot be read .*Permission denied"):
        check_model_dir(model_dir)
