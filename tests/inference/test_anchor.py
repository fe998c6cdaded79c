"""The blend of the clean-latent estimate towards z_c (ModelConfig.anchor): fit, storage, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demist_bids.inference.sampler import decode_condition, synthesize
from demist_bids.models.config import AnchorConfig, ModelConfig
from demist_bids.models.io import load_model, save_model
from demist_bids.training.anchor import fit_anchor
from demist_bids.training.methods import PAPER_SAMPLER, SamplerChoice
from tests.inference.test_sampler import _condition, model  # noqa: F401  (the module's tiny model)

CHANNELS = 8  # tiny_config's latent


def _with_anchor(model, weights, knots=(0, 999)):
    model.config.anchor = AnchorConfig(timesteps=list(knots), weights=[[w] * CHANNELS for w in weights])
    return model


def test_anchor_round_trips_through_config_json(model, tmp_path):
    anchored = _with_anchor(model, [0.1, 0.9])
    data = anchored.config.to_dict()
    assert ModelConfig.from_dict(data).anchor == anchored.config.anchor
    save_model(anchored, tmp_path / "m")
    assert load_model(tmp_path / "m").config.anchor.weights[1] == [0.9] * CHANNELS
    model.config.anchor = AnchorConfig()


def test_weights_interpolate_between_knots_and_clamp_outside(model):
    _with_anchor(model, [0.0, 0.5, 1.0], knots=(0, 100, 300))
    like = torch.zeros(1, CHANNELS, 2, 2, 2)
    assert model.anchor_weights(50, like).flatten().tolist() == pytest.approx([0.25] * CHANNELS)
    assert model.anchor_weights(200, like).flatten().tolist() == pytest.approx([0.75] * CHANNELS)
    assert model.anchor_weights(999, like).flatten().tolist() == pytest.approx([1.0] * CHANNELS)
    assert model.anchor_weights(100, like).shape == (1, CHANNELS, 1, 1, 1)
    assert not model.without_streams().anchored  # fitted for the full model, not the bare backbone
    model.config.anchor = AnchorConfig()


def test_full_blend_returns_the_condition_and_zero_blend_the_paper_sampler(model):
    cond = _condition((32, 32, 32))
    plain = synthesize(model, cond, sampler="ddim", steps=4, start=1.0, precision="fp32").mean
    nodiff = decode_condition(model, cond, precision="fp32")
    _with_anchor(model, [0.0, 0.0])
    zero = synthesize(model, cond, sampler="ddim", steps=4, start=1.0, precision="fp32")
    assert zero.info["anchor"] is True
    np.testing.assert_allclose(zero.mean, plain, atol=1e-5)
    _with_anchor(model, [1.0, 1.0])
    full = synthesize(model, cond, sampler="ddim", steps=4, start=1.0, precision="fp32").mean
    off = synthesize(model, cond, sampler="ddim", steps=4, start=1.0, precision="fp32", anchor=False).mean
    model.config.anchor = AnchorConfig()
    np.testing.assert_allclose(off, plain, atol=1e-5)
    # every clean estimate is z_c, and DDIM ends at t = 0: the chain lands on z_c
    assert np.abs(full - nodiff).max() < 0.02 * max(np.abs(nodiff).max(), 1e-3)
    assert np.abs(plain - nodiff).max() > 10 * np.abs(full - nodiff).max()
    with pytest.raises(ValueError, match="no fitted anchor"):
        synthesize(model, cond, steps=1, anchor=True)


def test_fit_is_never_worse_than_either_estimate(model):
    generator = torch.Generator().manual_seed(3)
    batches = [{"psr01": torch.rand(2, 1, 32, 32, 32, generator=generator),
                "cond": torch.rand(2, 2, 32, 32, 32, generator=generator)} for _ in range(2)]
    anchor, report = fit_anchor(model, batches, guidance=1.5, knots=(0, 400, 999), seed=1)
    assert anchor.timesteps == [0, 400, 999] and anchor.patches == 4 and anchor.guidance == 1.5
    weights = np.array(anchor.weights)
    assert weights.shape == (3, CHANNELS) and (weights >= 0).all() and (weights <= 1).all()
    for row in report:
        assert row["mse_blend"] <= min(row["mse_model"], row["mse_condition"]) + 1e-9
    # at t = 0 the noisy latent is the answer: the network needs little of z_c
    assert weights[0].mean() < weights[-1].mean()
    again, _ = fit_anchor(model, batches, guidance=1.5, knots=(0, 400, 999), seed=1)
    assert again == anchor
    with pytest.raises(ValueError, match="knots"):
        fit_anchor(model, batches, knots=(400, 0))


def test_fit_along_the_samplers_own_chains_ends_no_worse_than_z_c(model):
    from demist_bids.inference.schedulers import make_scheduler

    generator = torch.Generator().manual_seed(4)
    batches = [{"psr01": torch.rand(2, 1, 32, 32, 32, generator=generator),
                "cond": torch.rand(2, 2, 32, 32, 32, generator=generator)}]
    anchor, report = fit_anchor(model, batches, guidance=1.0, steps=3, seed=2)
    timesteps = sorted(int(t) for t in make_scheduler("ddim", model.config.schedule, 3).timesteps)
    assert anchor.steps == 3 and anchor.timesteps == timesteps and len(anchor.weights) == 3
    for row in report:
        assert row["mse_blend"] <= min(row["mse_model"], row["mse_condition"]) + 1e-9
    # the chains start from pure noise: at the first (noisiest) step nothing but z_c is worth much
    assert np.mean(anchor.weights[-1]) > 0.5


def test_the_paper_row_never_blends():
    assert PAPER_SAMPLER.anchor is False
    default = SamplerChoice("ddim", 20, 1.0)
    assert not default.same_chain(PAPER_SAMPLER)
    assert "no blend" in PAPER_SAMPLER.describe() and "no blend" not in default.describe()


def test_sampler_noise_is_guidance_then_blend_per_sample(model):
    """What the sampler steps with (and what a distillation teacher is imitated by)."""
    gen = torch.Generator().manual_seed(0)
    z_t, z_c = torch.randn(3, CHANNELS, 4, 4, 4, generator=gen), torch.randn(3, CHANNELS, 4, 4, 4, generator=gen)
    t = torch.tensor([999, 500, 20])
    _with_anchor(model, [0.2, 0.8])
    model.config.sampling.guidance = 1.5
    try:
        with torch.no_grad():
            got = model.sampler_noise(z_t, t, z_c)
            cond, uncond = model.predict_noise(z_t, t, z_c), model.backbone_noise(z_t, t)
            guided = uncond + 1.5 * (cond - uncond)
            for i, step in enumerate(t.tolist()):  # one timestep per patch, each with its own weights
                one = model.anchor_noise(guided[i:i + 1], z_t[i:i + 1], step, z_c[i:i + 1])
                torch.testing.assert_close(got[i:i + 1], one)
            assert not torch.allclose(got, guided)
            model.config.anchor = AnchorConfig()
            torch.testing.assert_close(model.sampler_noise(z_t, t, z_c), guided)
    finally:
        model.config.sampling.guidance = 1.0
        model.config.anchor = AnchorConfig()
