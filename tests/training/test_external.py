"""External validation (demist-evaluate) on tiny phantom cohorts."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    import torch

    from demist_bids.models.demist import build_model
    from demist_bids.models.io import save_model
    from demist_bids.phantom.cohort import generate_cohort
    from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

    root = tmp_path_factory.mktemp("external")
    generate_cohort(root / "train_bids", subjects=2, seed=3, scale=0.35, control_fraction=0.0)
    generate_cohort(root / "test_a", subjects=1, seed=4, scale=0.35, control_fraction=0.0)
    generate_cohort(root / "test_b", subjects=2, seed=6, scale=0.35, control_fraction=0.0)
    torch.manual_seed(0)
    model = build_model(tiny_config(psr_scale=0.3, sampling={"sampler": "ddim", "steps": 2}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    return root, save_model(model, root / "model", card={"name": "tiny-test"})


def test_each_test_cohort_is_scored_from_its_own_cache(cohorts, capsys):
    """Two test cohorts in one work folder: named caches keep the first cohort's preprocessing intact."""
    from demist_bids.cli.evaluate import run_evaluate as main

    root, model = cohorts
    common = ["--model", str(model), "--train-bids", str(root / "train_bids"), "--work", str(root / "work"),
              "--regressor", str(root / "regressor")]
    assert main([*common, "--test-bids", str(root / "test_a"), "--out", str(root / "out_a"),
                 "--test-cache", "preproc_a", "--train-regressor", "--regressor-steps", "3"]) == 0
    first = pd.read_csv(root / "out_a" / "evaluation_scans.tsv", sep="\t")
    cached = sorted(p.name for p in (root / "work" / "preproc_a").iterdir())
    assert (root / "regressor" / "regressor.json").exists()  # trained on the training cohort, then reused
    log = pd.read_csv(root / "regressor" / "stage" / "log.csv")
    assert log.step.max() == 3  # --regressor-steps, not the preset's 75

    assert main([*common, "--test-bids", str(root / "test_b"), "--out", str(root / "out_b"),
                 "--test-cache", "preproc_b"]) == 0
    second = pd.read_csv(root / "out_b" / "evaluation_scans.tsv", sep="\t")
    # every row of the cross-validation table that one model file can give (no ablations)
    rows = {"linear", "unet-regressor", "no-diffusion", "backbone-only", "demist", "demist-paper",
            "ae-ceiling", "measured"}
    assert set(first.method) == rows and set(second.method) == rows
    assert {"lesion_auc_proximal", "lesion_auc_distal", "lesion_auc_combined"} <= set(first.columns)
    assert first.psnr.notna().sum() == len(rows) - 1  # every row but the measured map is an image
    page = (root / "out_a" / "evaluation.html").read_text()
    assert "paper&#x27;s sampler" in page and "Lesion-level AUC" in page
    assert (root / "out_a" / "lesion_auc_pooled.tsv").exists()
    assert first.bids_name.nunique() == 1 and second.bids_name.nunique() == 2
    assert sorted(p.name for p in (root / "work" / "preproc_a").iterdir()) == cached
    assert "demist" in capsys.readouterr().out  # the per-method means close the output

    # Scoring cohort A again from its cache gives the same numbers.
    assert main([*common, "--test-bids", str(root / "test_a"), "--out", str(root / "out_a2"),
                 "--test-cache", "preproc_a"]) == 0
    again = pd.read_csv(root / "out_a2" / "evaluation_scans.tsv", sep="\t")
    pd.testing.assert_frame_equal(first, again)
