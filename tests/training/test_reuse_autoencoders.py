"""``train --autoencoders-from MODEL``: the ae and align stages are skipped, the autoencoders are the model's."""

import json

import pytest
import torch

from demist_bids.exceptions import UsageError
from tests.training.test_pipeline import _config

pytestmark = pytest.mark.slow


def test_autoencoders_come_from_the_given_model(tmp_path):
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import load_model, save_model
    from demist_bids.phantom.cohort import generate_cohort
    from demist_bids.training import run_train
    from tests.models.tiny import tiny_config

    generate_cohort(tmp_path / "bids", subjects=2, seed=5, scale=0.3, control_fraction=0.0)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("patch_size = [16, 16, 16]\nbatch_size = 1\neval_steps = 2\nscale_factor_batches = 2\n")
    # a source model with the small preset's autoencoder sizes and recognisable weights
    from demist_bids.models.config import preset

    source = build_model(preset("small", patch_size=[16, 16, 16]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in list(source.psr_autoencoder.parameters()) + list(source.cond_autoencoder.parameters()):
            param.add_(0.01 * torch.randn(param.shape, generator=generator))
    source_dir = save_model(source, tmp_path / "source")

    assert run_train(_config(tmp_path, recipe, folds=1, autoencoders_from=source_dir)) == 0
    out = tmp_path / "out"
    trained = load_model(out / "model")
    for name in ("psr_autoencoder", "cond_autoencoder"):
        mine, theirs = getattr(trained, name).state_dict(), getattr(source, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    fold = out / "training" / "all"
    assert not (fold / "ae").exists() and not (fold / "align").exists()  # neither stage ran
    recorded = json.loads((fold / "autoencoders_from.json").read_text())
    assert len(recorded["latent_channel_scale"]) == trained.config.autoencoder.latent_channels
    assert trained.config.latent_channel_scale == pytest.approx(recorded["latent_channel_scale"])
    assert "not run" in trained.config.card["autoencoders"]

    # autoencoders of another size are refused by name
    other = save_model(build_model(tiny_config("full")), tmp_path / "tiny")
    with pytest.raises(UsageError, match="autoencoders"):
        run_train(_config(tmp_path, recipe, folds=1, autoencoders_from=other))
