"""synthesize(precision=...): bf16 autocast on request on any device, fp32 by default on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from demist_bids.inference.sampler import synthesize
from demist_bids.models.demist import build_model
from tests.inference.test_sampler import _condition
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config


def test_bf16_on_request_is_close_to_fp32():
    model = build_model(tiny_config("full", psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    cond = _condition((32, 32, 32))
    fp32 = synthesize(model, cond, steps=3, seed=2, device="cpu")
    bf16 = synthesize(model, cond, steps=3, seed=2, device="cpu", precision="bf16")
    assert fp32.info["dtype"] == "float32" and bf16.info["dtype"] == "bfloat16-autocast"
    assert not np.array_equal(fp32.mean, bf16.mean)  # it really ran in lower precision
    assert np.corrcoef(fp32.mean.ravel(), bf16.mean.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError):
        synthesize(model, cond, steps=1, precision="fp16")
