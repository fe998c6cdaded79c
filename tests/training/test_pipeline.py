"""The train level end to end on a tiny phantom cohort: folds, stages, evaluation, model export."""

import json

import pandas as pd
import pytest

from demist_bids.config import Config
from demist_bids.exceptions import MissingInputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from demist_bids.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("train")
    generate_cohort(root / "bids", subjects=4, seed=5, scale=0.3, control_fraction=0.25)
    recipe = root / "recipe.toml"
    recipe.write_text("patch_size = [16, 16, 16]\nbatch_size = 1\neval_steps = 2\nscale_factor_batches = 2\n")
    return root, recipe


def _config(root, recipe, **train):
    config = Config()
    config.execution.bids_dir = root / "bids"
    config.execution.output_dir = root / "out"
    config.execution.work_dir = root / "work"
    config.execution.analysis_level = "train"
    config.train.preset = "small"
    config.train.max_steps = 1
    config.train.recipe = recipe
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def test_train_two_folds_then_eval_stage_alone(cohort):
    from demist_bids.models.io import load_model
    from demist_bids.training import run_train

    root, recipe = cohort
    assert run_train(_config(root, recipe, folds=2)) == 0
    out = root / "out"
    folds = pd.read_csv(out / "evaluation" / "evaluation.tsv", sep="\t")
    # Table 1 and where the quality comes from (issue 16): baselines, DEMIST's parts, both samplers, ceilings
    methods = {"linear", "unet-regressor", "no-diffusion", "backbone-only", "ftldm", "controlnet", "lora",
               "demist", "demist-paper", "ae-ceiling", "measured"}
    assert set(folds.method) == methods
    assert folds.groupby("method").size().eq(2).all()  # a row per method and fold
    assert {"lesion_auc_proximal", "lesion_auc_distal", "lesion_auc_combined", "auc_combined"} <= set(folds)
    page = (out / "evaluation" / "evaluation.html").read_text()
    from demist_bids.reports.evaluation import METHOD_LABELS

    assert all(METHOD_LABELS[m].replace("'", "&#x27;") in page for m in methods)
    assert page.count("<tr>") >= len(methods) and "Lesion-level AUC" in page
    pooled = pd.read_csv(out / "evaluation" / "lesion_auc_pooled.tsv", sep="\t")
    assert set(pooled.method) == methods and (pooled.n_lesions > 0).all()
    # the regressor trained per fold, beside the diffusion methods, and not for the final model
    assert (out / "training" / "fold-0" / "models" / "unet-regressor" / "regressor.json").exists()
    assert (out / "training" / "fold-1" / "regressor" / "done.json").exists()
    assert not (out / "training" / "all" / "regressor").exists()
    card_text = (out / "model" / "README.md").read_text()
    assert all(f"| {m} |" in card_text for m in methods) and "DEMIST minus no diffusion" in card_text
    assert "assignment" in json.loads((out / "model" / "config.json").read_text())["card"]["folds"]
    model = load_model(out / "model")
    assert model.config.card["training_data"]["synthetic"] is True
    assert "not a clinical model" in (out / "model" / "README.md").read_text()
    assert model.config.psr_latent_scale != 1.0  # scale factors were computed and stored
    # the blend towards z_c was fitted after the streams, stored, and described on the card
    assert model.anchored and len(model.config.anchor.weights) == len(model.config.card["anchor_fit"])
    assert "blended towards the conditioning latent" in card_text
    # The exported model samples the way it was evaluated (the small recipe's eval sampler).
    sampling = model.config.sampling
    assert (sampling.sampler, sampling.steps, sampling.start, sampling.precision) == ("ddim", 2, 0.15, "bf16")
    assert "noised to 0.15" in (out / "evaluation" / "evaluation.html").read_text()

    # --stage eval alone: reuses the trained models, retrains nothing.
    checkpoint = out / "training" / "fold-0" / "diffusion-demist" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    (out / "evaluation" / "evaluation.tsv").unlink()
    assert run_train(_config(root, recipe, folds=2, stage="eval")) == 0
    assert checkpoint.stat().st_mtime_ns == before
    assert len(pd.read_csv(out / "evaluation" / "evaluation.tsv", sep="\t")) == len(folds)

    # --stage regressor alone: retrains the U-Net baseline of each fold and nothing else.
    regressor = out / "training" / "fold-0" / "models" / "unet-regressor" / "regressor.safetensors"
    old_regressor = regressor.stat().st_mtime_ns
    assert run_train(_config(root, recipe, folds=2, stage="regressor")) == 0
    assert regressor.stat().st_mtime_ns != old_regressor and checkpoint.stat().st_mtime_ns == before
    assert not (out / "training" / "all" / "regressor").exists()


def test_no_psr_maps_is_a_missing_input(cohort, tmp_path):
    import shutil

    from demist_bids.training import run_train

    root, recipe = cohort
    bids = tmp_path / "bids"
    shutil.copytree(root / "bids", bids, ignore=shutil.ignore_patterns("qmt"))
    config = _config(root, recipe, folds=1)
    config.execution.bids_dir = bids
    config.execution.output_dir = tmp_path / "out"
    with pytest.raises(MissingInputError):
        run_train(config)
