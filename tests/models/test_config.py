"""ModelConfig presets, ablation switches and JSON round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from demist_bids.models.config import ABLATIONS, ModelConfig, preset


@pytest.mark.parametrize("name", ["paper", "small"])
def test_preset_json_round_trip(name):
    config = preset(name)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    # paper: the bundle's 4x latent with 8 channels; small: 2x with 4 (see the module docstring)
    downsampling, latent_channels = {"paper": (4, 8), "small": (2, 4)}[name]
    assert config.autoencoder.downsampling == downsampling
    assert config.autoencoder.latent_channels == latent_channels
    assert config.size_multiple == downsampling * 4


def test_paper_preset_is_the_bundle_configuration():
    config = preset("paper")
    assert config.autoencoder.channels == [64, 128, 256]
    assert config.unet.channels == [256, 256, 512]
    assert config.unet.attention_levels == [False, True, True]
    assert config.unet.num_head_channels == [0, 64, 64]
    assert (config.schedule.beta_start, config.schedule.beta_end) == (0.0015, 0.0195)
    assert config.schedule.schedule == "scaled_linear_beta"


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_sets_stream_switches(ablation):
    streams = preset("small", ablation=ablation).streams
    switches = {"semantic": streams.semantic, "spatial": streams.spatial, "adaptive": streams.adaptive}
    assert switches == ABLATIONS[ablation]


def test_overrides_merge_into_sections():
    config = preset("small", streams={"lora_rank": 16}, psr_scale=0.25)
    assert config.streams.lora_rank == 16
    assert config.streams.token_dim == preset("small").streams.token_dim
    assert config.psr_scale == 0.25


def test_unknown_keys_and_names_raise():
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"nonsense": 1})
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"streams": {"rank": 3}})
    with pytest.raises(ValueError):
        preset("huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        preset("small", ablation="everything")


def test_config_module_does_not_import_torch():
    code = "import sys, demist_bids.models.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
