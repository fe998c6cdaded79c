"""decode_condition and reconstruct_psr: the no-diffusion and autoencoder-ceiling maps of the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demist_bids.inference.sampler import decode_condition, reconstruct_psr
from demist_bids.models.demist import build_model
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model(tiny_config("full", psr_scale=0.3, sampling={"precision": "fp32"}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    return model.eval()


def _blob(shape, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.exp(-sum(g**2 for g in grids) * 2.0) + 0.02 * rng.random(shape)


def test_reconstruct_psr_is_decode_of_encode(model):
    psr = (0.2 * _blob((32, 32, 32))).astype(np.float32)  # one autoencoder window: no blending
    out = reconstruct_psr(model, psr)
    with torch.no_grad():
        by_hand = model.decode_psr(model.encode_psr(torch.from_numpy(psr / 0.3)[None, None]))
    expected = by_hand.clamp(0, 1)[0, 0].numpy() * 0.3
    assert out.shape == psr.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_decode_condition_is_deterministic_on_the_input_grid(model):
    # content 8..23 on a 40^3 grid: with its 8-voxel margin the box is exactly 0..31, one window
    cond = np.zeros((2, 40, 40, 40), np.float32)
    cond[:, 8:24, 8:24, 8:24] = np.stack([_blob((16, 16, 16), 1), 0.6 * _blob((16, 16, 16), 2)])
    first = decode_condition(model, cond)
    assert first.shape == cond.shape[1:] and first.dtype == np.float32
    np.testing.assert_array_equal(first, decode_condition(model, cond))
    with torch.no_grad():
        z_c = model.encode_condition(torch.from_numpy(cond[:, :32, :32, :32])[None])
        by_hand = model.decode_psr(z_c).clamp(0, 1)[0, 0].numpy() * 0.3
    np.testing.assert_allclose(first[:32, :32, :32], by_hand, atol=1e-5)
    assert first.any() and not first[32:].any()  # nothing outside the content box
