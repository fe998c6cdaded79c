"""benchmarks/autoencoder_ceiling.py on small synthetic volumes: sizes parsed, every size scored."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from demist_bids.training.volumes import TrainingVolume

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "autoencoder_ceiling.py"


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("autoencoder_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _volume(name: str, seed: int) -> TrainingVolume:
    rng = np.random.default_rng(seed)
    shape = (36, 36, 36)
    brain = np.zeros(shape, bool)
    brain[4:32, 4:32, 4:32] = True
    wm = np.zeros(shape, bool)
    wm[10:26, 10:26, 10:26] = True
    lesion = np.zeros(shape, bool)
    lesion[(slice(12, 15), *[slice(int(a), int(a) + 3) for a in rng.integers(12, 20, 2)])] = True
    psr = (np.where(wm, 0.18, 0.07) * brain).astype(np.float32)
    psr[lesion] = 0.1
    t1w = np.where(wm, 0.9, 0.6) * brain
    flair = np.where(lesion, 0.9, 0.5) * brain
    cond = np.stack([t1w, flair]).astype(np.float32)
    return TrainingVolume(name, cond, psr, brain, lesion, wm & ~lesion, np.eye(4))


def test_parse_size(ceiling):
    assert ceiling.parse_size("16,32,32:8") == ([16, 32, 32], 8)
    assert ceiling.parse_size("16,32:4") == ([16, 32], 4)


def test_every_size_is_trained_and_scored_beside_the_linear_baseline(ceiling):
    train = [_volume(f"sub-{i}", i) for i in range(2)]
    test = [_volume("sub-9", 9)]
    table = ceiling.ceilings(train, test, ["16,32,32:8", "16,32:4"], steps=3)
    assert list(table) == ["linear", "16,32,32:8", "16,32:4"]
    for row in table.values():
        assert np.isfinite(row["psnr"]) and 0 <= row["auc_combined"] <= 1
    # this phantom-like PSR is an exact linear function of the inputs: the baseline is near-perfect
    assert table["linear"]["psnr"] > table["16,32:4"]["psnr"]
