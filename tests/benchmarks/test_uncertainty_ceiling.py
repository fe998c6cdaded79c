"""benchmarks/uncertainty_ceiling.py: the perfect sampler is rebuilt from the cohort's own seed, or refused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from demist_bids.phantom.cohort import generate_cohort

    root = tmp_path_factory.mktemp("ceiling") / "bids"
    generate_cohort(root, subjects=2, seed=5, scale=0.3, control_fraction=0.5)
    return root


def test_the_rebuilt_truth_is_the_cohorts_psr_and_the_last_line_scores_it(cohort, capsys):
    from uncertainty_ceiling import main

    args = ["--seed", "5", "--subjects", "2", "--scale", "0.3", "--control-fraction", "0.5", "--bids", str(cohort),
            "--samples", "2", "--draws", "3"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines[:2]] == ["sub-01", "sub-02"]
    last = dict(item.split("=") for item in lines[-1].split())
    assert set(last) == {"perfect_spearman", "perfect_spearman_limit", "target"}
    assert -1 <= float(last["perfect_spearman"]) <= 1 and -1 <= float(last["perfect_spearman_limit"]) <= 1


def test_a_cohort_made_with_other_arguments_is_refused(cohort, capsys):
    from uncertainty_ceiling import main

    assert main(["--seed", "6", "--subjects", "2", "--scale", "0.3", "--control-fraction", "0.5",
                 "--bids", str(cohort), "--samples", "2", "--draws", "2"]) == 2
    err = capsys.readouterr().err
    assert "differs from" in err and "seed" in err


def test_the_spread_spearman_is_high_when_the_spread_is_where_the_error_is():
    from uncertainty_ceiling import spread_spearman

    rng = np.random.default_rng(0)
    brain = np.ones((12, 12, 12), bool)
    scale = np.linspace(0.001, 0.1, brain.size).reshape(brain.shape)  # each voxel's own posterior width
    truth = rng.normal(0, scale)
    draws = rng.normal(0, scale, size=(32, *brain.shape))  # calibrated: truth and draws share the width
    assert spread_spearman(draws, truth, brain) > 0.5
    flat = rng.normal(0, 0.05, size=(32, *brain.shape))  # the same spread everywhere: it says nothing
    assert abs(spread_spearman(flat, truth, brain)) < 0.1
