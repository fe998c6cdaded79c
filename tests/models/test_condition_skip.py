"""The learned skip from z_c into the clean-latent estimate (``StreamsConfig.condition_skip``)."""

from __future__ import annotations

import json

import pytest
import torch

from demist_bids.models.condition_skip import SKIP_KNOTS
from demist_bids.models.demist import build_model
from demist_bids.models.io import component_states, load_model, save_model
from demist_bids.training.losses import predicted_clean_latent
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config


def _model(skip=True, prediction="v_prediction", trained=True, **switches):
    torch.manual_seed(0)
    model = build_model(tiny_config("full", streams={"token_dim": 12, "token_grid": [2, 2, 2],
                                                    "cross_attention_heads": 2, "lora_rank": 2,
                                                    "condition_skip": skip, **switches},
                                    schedule={"prediction_type": prediction}))
    pretend_pretrained(model)
    if trained:
        pretend_trained_streams(model)
    return model


def test_off_by_default_and_absent_without_a_stream():
    assert tiny_config().streams.condition_skip is False
    assert _model(skip=False).skip is None
    # no stream at all: the backbone alone, which nothing conditions
    assert _model(skip=True, trained=False, semantic=False, spatial=False, adaptive=False).skip is None
    assert not any(k.startswith("skip.") for k in component_states(_model(skip=False))["streams"])


def test_weights_start_at_one_minus_abar_and_are_linear_between_knots():
    model = _model(trained=False)
    abar = model.alphas_cumprod
    knots = torch.tensor(SKIP_KNOTS)
    start = model.skip.weights(knots)
    assert start.shape == (len(SKIP_KNOTS), 8)
    torch.testing.assert_close(start[:, 0], (1 - abar[knots]).clamp(1e-3, 1 - 1e-3), rtol=1e-4, atol=1e-6)
    # halfway between two knots: the mean of their weights, per channel
    with torch.no_grad():
        model.skip.logits.normal_()
    mid = model.skip.weights(torch.tensor([150, 250]))
    ends = model.skip.weights(torch.tensor([100, 200, 300]))
    torch.testing.assert_close(mid, torch.stack([(ends[0] + ends[1]) / 2, (ends[1] + ends[2]) / 2]))
    last = model.skip.weights(torch.tensor([999, 5000]))
    assert torch.equal(last[1], last[0])  # clamped to the last knot


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_the_clean_estimate_is_the_blend_of_the_network_and_z_c(prediction):
    model = _model(prediction=prediction)
    with torch.no_grad():
        model.skip.logits.normal_()
    z_t, z_c = torch.randn(2, 8, 8, 8, 8), torch.randn(2, 8, 8, 8, 8)
    t = torch.tensor([120, 730])
    with torch.no_grad():
        blended = predicted_clean_latent(z_t, model.predict_noise(z_t, t, z_c), t, model.alphas_cumprod)
        skip, model.skip = model.skip, None
        own = predicted_clean_latent(z_t, model.predict_noise(z_t, t, z_c), t, model.alphas_cumprod)
        model.skip = skip
        a = skip.weights(t).view(2, 8, 1, 1, 1)
    torch.testing.assert_close(blended, (1 - a) * own + a * z_c, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        model.skip.logits.fill_(30.0)  # a = 1: the estimate is z_c whatever the network says
        pinned = predicted_clean_latent(z_t, model.predict_noise(z_t, t, z_c), t, model.alphas_cumprod)
    torch.testing.assert_close(pinned, z_c, rtol=1e-4, atol=1e-4)


def test_it_is_a_stream_parameter_saved_with_the_streams(tmp_path):
    model = _model()
    ids = {id(p) for p in model.skip.parameters()}
    assert ids <= {id(p) for p in model.trainable_stream_parameters()}
    assert ids <= {id(p) for p in model.gate_parameters()}  # trained at the gates' rate
    with torch.no_grad():
        model.skip.logits.normal_()
    directory = save_model(model, tmp_path / "model")
    assert json.loads((directory / "config.json").read_text())["streams"]["condition_skip"] is True
    loaded = load_model(directory)
    torch.testing.assert_close(loaded.skip.logits, model.skip.logits)
