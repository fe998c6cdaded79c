"""benchmarks/sampler_selection.py: the fastest sampler within tolerance, recorded in the model config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from demist_bids.models.demist import build_model
from tests.models.tiny import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_fastest_option_within_tolerance_is_chosen_and_recorded(tmp_path):
    from sampler_selection import SamplerTrial, fastest_within_tolerance, record_choice
    from demist_bids.models.io import read_model_config, save_model, write_model_config

    reference = SamplerTrial("ddpm", 1000, seconds=100.0, psnr_truth=25.0)
    options = [
        SamplerTrial("ddim", 50, seconds=5.0, psnr_truth=25.1),
        SamplerTrial("dpm++", 10, seconds=1.0, psnr_truth=24.8),
        SamplerTrial("ddim", 5, seconds=0.5, psnr_truth=24.0),  # fastest, but 1 dB worse
    ]
    choice = fastest_within_tolerance(reference, options)
    assert choice.label == "dpm++:10"
    assert fastest_within_tolerance(reference, options[2:]) is None

    directory = save_model(build_model(tiny_config("ft-ldm")), tmp_path / "m")
    updated = record_choice(read_model_config(directory), choice, reference)
    write_model_config(directory, updated)
    config = read_model_config(directory)
    assert (config.sampling.sampler, config.sampling.steps) == ("dpm++", 10) and config.sampling.validated
    assert config.card["sampler_benchmark"]["speedup"] == 100.0
    assert config.sampling.start == 1.0
    with pytest.raises(ValueError):
        write_model_config(directory, tiny_config("full"))

    # an option that starts from the noised conditioning latent records its start too
    late = SamplerTrial("ddim", 3, seconds=0.4, psnr_truth=24.9, start=0.15)
    assert late.label == "ddim:3/0.15"
    assert fastest_within_tolerance(reference, [*options, late]) is late
    config = record_choice(config, late, reference)
    assert (config.sampling.sampler, config.sampling.steps, config.sampling.start) == ("ddim", 3, 0.15)
    assert config.card["sampler_benchmark"]["choice_psnr_truth_db"] == 24.9
    assert config.sampling.precision == "auto"
    fast = SamplerTrial("ddim", 2, seconds=0.2, psnr_truth=24.95, start=0.15, precision="bf16")
    assert fast.label == "ddim:2/0.15@bf16"
    assert record_choice(config, fast, reference).sampling.precision == "bf16"
