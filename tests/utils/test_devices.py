"""The one device resolver (utils/devices.py) that every level and the sampler use."""

from __future__ import annotations

import pytest
import torch

from demist_bids.exceptions import UsageError
from demist_bids.utils.devices import resolve_device


def test_auto_and_explicit_devices():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("requested", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_usage_error(requested):
    with pytest.raises(UsageError, match=f"--device {requested} was requested but no CUDA device"):
        resolve_device(requested)


def test_the_sampler_and_the_participant_level_share_it():
    from demist_bids.cli import participant
    from demist_bids.inference import sampler

    assert sampler.resolve_device is resolve_device and participant.resolve_device is resolve_device
