"""Model directory format, checksums and bundle (old MONAI GenerativeModels) weights."""

from __future__ import annotations

import json

import pytest
import torch

from demist_bids.models.demist import build_model
from demist_bids.models.io import (
    load_autoencoder_weights,
    load_backbone_weights,
    load_model,
    read_model_config,
    save_model,
)
from demist_bids.models.unet import build_backbone, plain_state_dict
from demist_bids.utils.model_files import directory_sha256 as model_sha256
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config


@pytest.fixture(scope="module")
def trained_model():
    model = build_model(tiny_config("full", psr_latent_scale=1.7, psr_scale=0.28))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    return model


def test_round_trip_is_exact(trained_model, tmp_path):
    directory = save_model(trained_model, tmp_path / "model", card={"folds": 5})
    assert sorted(p.name for p in directory.iterdir()) == [
        "SHA256SUMS",
        "backbone.safetensors",
        "cond_autoencoder.safetensors",
        "config.json",
        "psr_autoencoder.safetensors",
        "streams.safetensors",
    ]
    config = json.loads((directory / "config.json").read_text())
    assert config["card"] == {"folds": 5}
    assert config["psr_scale"] == 0.28 and config["psr_latent_scale"] == 1.7
    assert config["demist_version"]
    loaded = load_model(directory)
    original = trained_model.state_dict()
    assert set(loaded.state_dict()) == set(original)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    z = torch.randn(1, 8, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.predict_noise(z, torch.tensor([3]), z), trained_model.predict_noise(z, torch.tensor([3]), z)
        )
    assert {id(p) for p in loaded.parameters() if p.requires_grad} == {
        id(p) for p in loaded.trainable_stream_parameters()
    }


def test_float16_storage_halves_the_files_and_loads_as_float32(trained_model, tmp_path):
    full = save_model(trained_model, tmp_path / "fp32")
    half = save_model(trained_model, tmp_path / "fp16", weights="float16")
    for name in ("backbone", "streams", "psr_autoencoder"):
        ratio = (half / f"{name}.safetensors").stat().st_size / (full / f"{name}.safetensors").stat().st_size
        assert 0.45 < ratio < 0.6, (name, ratio)
    loaded = load_model(half)
    original = trained_model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == original[key].dtype, key  # float32 parameters again
        torch.testing.assert_close(value, original[key], rtol=1e-3, atol=1e-4)  # float16 rounding only
    assert any(not torch.equal(v, original[k]) for k, v in loaded.state_dict().items())  # really rounded


def test_backbone_file_holds_plain_monai_keys(trained_model, tmp_path):
    from safetensors.torch import load_file

    directory = save_model(trained_model, tmp_path / "model")
    plain = build_backbone(trained_model.config.unet, 8)
    plain.load_state_dict(load_file(str(directory / "backbone.safetensors")))  # strict


def test_ablation_without_streams_file_loads(tmp_path):
    model = build_model(tiny_config("ft-ldm"))
    directory = save_model(model, tmp_path / "m")
    assert read_model_config(directory).streams.ablation() == "ft-ldm"
    load_model(directory)


def test_checksum_is_stable_and_sensitive(trained_model, tmp_path):
    directory = save_model(trained_model, tmp_path / "a")
    first = model_sha256(directory)
    assert first == model_sha256(directory) and len(first) == 64
    save_model(trained_model, directory)  # overwrite in place: same content, same hash
    assert model_sha256(directory) == first
    assert not list(tmp_path.glob(".a*"))  # no temporary leftovers
    with open(directory / "config.json", "a") as fh:
        fh.write(" ")
    assert model_sha256(directory) != first


def test_mismatched_weights_are_refused(trained_model, tmp_path):
    directory = save_model(trained_model, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["streams"]["spatial"] = False
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(KeyError):
        load_model(directory)


def _to_old_generative_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MONAI 1.5+ keys back to MONAI GenerativeModels 0.2 keys (inverse of ``load_old_state_dict``)."""
    old = {}
    for key, value in state.items():
        if ".attn.to_" in key:
            key = key.replace(".attn.to_", ".to_")
        key = key.replace("postconv", "conv")
        old[key] = value
    for key in [k for k in old if k.endswith(".to_q.weight")]:
        block = key.removesuffix(".to_q.weight")
        width = old[key].shape[0]
        old[f"{block}.proj_attn.weight"] = torch.randn(width, width)
        old[f"{block}.proj_attn.bias"] = torch.randn(width)
    return old


def test_load_bundle_format_backbone(tmp_path):
    config = tiny_config("full", schedule={"prediction_type": "epsilon"})  # the bundle's parametrization
    source = build_backbone(config.unet, 8)
    with torch.no_grad():
        for param in source.parameters():
            param.normal_(0, 0.05)
    old = _to_old_generative_keys(source.state_dict())
    assert "down_blocks.1.attentions.0.to_q.weight" in old
    path = tmp_path / "model_brats_mri_generative_diffusion_v1.pt"
    torch.save(old, path)

    with pytest.raises(ValueError, match="predicts epsilon"):
        load_backbone_weights(build_model(tiny_config("full")), path)  # a v_prediction model
    model = build_model(config)
    load_backbone_weights(model, path)
    expected = source.state_dict()
    loaded = plain_state_dict(model.backbone)
    assert set(loaded) == set(expected)
    for key in expected:
        assert torch.equal(loaded[key], expected[key]), key
    # the ControlNet copy restarted from the new weights, and the model still equals its backbone
    assert torch.equal(model.controlnet.conv_in.conv.weight, expected["conv_in.conv.weight"])
    z = torch.randn(1, 8, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_noise(z, 10, z), source(z, torch.tensor([10])))


def test_load_genuine_generative_weights(tmp_path):
    """With monai-generative 0.2.3 (``pip install --no-deps``) the real old classes write the file."""
    nets = pytest.importorskip("generative.networks.nets")
    config = tiny_config("full", schedule={"prediction_type": "epsilon"})  # the bundle's parametrization
    unet = config.unet
    old_unet = nets.DiffusionModelUNet(
        spatial_dims=3,
        in_channels=8,
        out_channels=8,
        num_channels=tuple(unet.channels),
        attention_levels=tuple(unet.attention_levels),
        num_head_channels=tuple(unet.num_head_channels),
        num_res_blocks=unet.num_res_blocks,
        norm_num_groups=unet.norm_num_groups,
    )
    with torch.no_grad():
        for param in old_unet.parameters():
            param.normal_(0, 0.05)
    path = tmp_path / "old.pt"
    torch.save(old_unet.state_dict(), path)
    model = build_model(config)
    load_backbone_weights(model, path)
    z = torch.randn(1, 8, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_noise(z, 10, z), old_unet(z, torch.tensor([10])))


def test_autoencoders_start_from_one_bundle_autoencoder(tmp_path):
    from demist_bids.models.autoencoders import build_autoencoder

    config = tiny_config("full")
    source = build_autoencoder(config.autoencoder, 1)
    path = tmp_path / "ae.pt"
    torch.save(source.state_dict(), path)
    model = build_model(config)
    load_autoencoder_weights(model, path)
    image = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.psr_autoencoder.encode(image)[0], source.encode(image)[0])
        # the same image in both channels encodes as the single-channel autoencoder does
        torch.testing.assert_close(
            model.cond_autoencoder.encode(image.repeat(1, 2, 1, 1, 1))[0], source.encode(image)[0], atol=1e-5, rtol=1e-4
        )
