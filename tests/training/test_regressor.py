"""The regressor stage (U-Net baseline): trains, lowers its L1, resumes exactly, saves and predicts."""

from pathlib import Path

import numpy as np
import pytest
import torch

from demist_bids.models.regressor import (RegressorConfig, build_regressor, is_saved_regressor, load_regressor,
                                          predict_psr, save_regressor)
from demist_bids.training import stages as st
from demist_bids.training.checkpoints import TerminationFlag, TrainingInterrupted
from demist_bids.training.distributed import DistributedContext
from demist_bids.training.patches import PatchSampler
from demist_bids.training.recipes import recipe
from tests.training.test_stages import _blob_volume


def _setting(tmp_path, steps=40):
    rec = recipe("small")
    rec.patch_size = [16, 16, 16]
    rec.batch_size = 2
    rec.steps_per_epoch = 10
    rec.regressor_features = [8, 8, 16, 16, 32, 8]
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    config = st.regressor_config(rec, 0.2)

    def run(name, flag=None, resume=False):
        return st.StageRun(sampler, rec, Path(tmp_path) / name, steps, DistributedContext(),
                           flag or TerminationFlag(), resume, 0, torch.device("cpu"))

    return config, run


def _fresh(config):
    torch.manual_seed(0)
    return build_regressor(config)


def _losses(directory):
    lines = (Path(directory) / "log.csv").read_text().splitlines()
    column = lines[0].split(",").index("loss")
    return [float(line.split(",")[column]) for line in lines[1:]]


def test_regressor_trains_lowers_its_loss_and_resumes_exactly(tmp_path):
    config, run = _setting(tmp_path)
    assert config.patch_size == [16, 16, 16] and config.psr_scale == 0.2
    net = _fresh(config)
    st.train_regressor(net, run("straight"))
    losses = _losses(tmp_path / "straight")
    assert len(losses) == 40 and np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])
    assert (tmp_path / "straight" / "done.json").exists()

    # Killed after step 15 (a checkpoint is saved), then resumed: the same weights bit for bit.
    flag = TerminationFlag()
    interrupted = run("killed", flag)
    original_batch = interrupted.sampler.batch

    def batch(step, *args, **kwargs):
        if step == 14:
            flag.requested = True
        return original_batch(step, *args, **kwargs)

    interrupted.sampler.batch = batch
    with pytest.raises(TrainingInterrupted):
        st.train_regressor(_fresh(config), interrupted)
    interrupted.sampler.batch = original_batch
    resumed = _fresh(config)
    st.train_regressor(resumed, run("killed", resume=True))
    for key, value in net.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_saved_regressor_predicts_psr_on_any_grid(tmp_path):
    config = RegressorConfig(features=[8, 8, 16, 16, 32, 8], patch_size=[16, 16, 16], psr_scale=0.2)
    net = _fresh(config)
    assert not is_saved_regressor(tmp_path / "r")
    save_regressor(net, config, tmp_path / "r")
    loaded, loaded_config = load_regressor(tmp_path / "r")
    assert loaded_config == config and is_saved_regressor(tmp_path / "r")
    cond = np.random.default_rng(0).random((2, 21, 30, 13)).astype(np.float32)  # not a multiple of the patch
    out = predict_psr(loaded, loaded_config, cond)
    assert out.shape == (21, 30, 13) and out.dtype == np.float32 and (out >= 0).all()
    np.testing.assert_allclose(out, predict_psr(net, config, cond), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="norm_groups"):
        RegressorConfig(features=[8, 8, 16, 16, 32, 12])
