"""benchmarks/uncertainty_ceiling.py: the perfect sampler is rebuilt from the cohort's own seed, or refused;
its PSNRs carry the posterior variance as E + V / N says."""

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
    psnr = {key: float(value) for key, value in (item.split("=") for item in lines[-2].split())}
    assert set(psnr) == {"perfect_psnr_1", "perfect_psnr_2", "perfect_psnr_posterior_mean", "hidden_var"}
    assert psnr["hidden_var"] > 0
    # the posterior mean carries none of the spread, the mean of two draws half of it, one draw all of it
    assert psnr["perfect_psnr_posterior_mean"] > psnr["perfect_psnr_2"]


def test_calibration_is_priced_against_a_rows_file_of_the_same_scans(cohort, tmp_path, capsys):
    from uncertainty_ceiling import calibration_cost_db, main

    rows = tmp_path / "rows.tsv"
    rows.write_text("m\tno-diffusion\tsub-01\t20.0\t0.9\nm\tother\tsub-01\t10.0\t0.5\n"
                    "m\tno-diffusion\tsub-02\t30.0\t0.9\n")
    args = ["--seed", "5", "--subjects", "2", "--scale", "0.3", "--control-fraction", "0.5",
            "--samples", "2", "--draws", "3", "--data-range", "0.2", "--rows", str(rows)]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    scans = [dict(item.split("=") for item in line.split("\t")[2:]) for line in lines[:2]]
    assert [float(scan["no-diffusion_psnr"]) for scan in scans] == [20.0, 30.0]
    for scan in scans:
        expected = calibration_cost_db(float(scan["no-diffusion_psnr"]), float(scan["hidden_var"]),
                                       samples=2, data_range=0.2)
        assert float(scan["calibration_cost_db"]) == pytest.approx(expected, rel=0.01)  # hidden_var has 3 digits
    # a better row (less error of its own) pays more for the same spread
    assert float(scans[1]["calibration_cost_db"]) > float(scans[0]["calibration_cost_db"]) > 0
    summary = dict(item.split("=") for item in lines[-2].split())
    assert summary["scans"] == "2"


@pytest.mark.parametrize("content, extra, message", [
    ("m\tother\tsub-01\t20.0\n", [], "has no row 'no-diffusion'"),
    ("a\tno-diffusion\tsub-01\t20.0\nb\tno-diffusion\tsub-01\t21.0\n", [], "name the method"),
    ("a\tno-diffusion\tsub-01\t20.0\nb\tno-diffusion\tsub-01\t21.0\n", ["--method", "c"], "of method 'c'"),
])
def test_a_rows_file_that_does_not_say_one_score_per_scan_is_refused(tmp_path, capsys, content, extra, message):
    from uncertainty_ceiling import main

    rows = tmp_path / "rows.tsv"
    rows.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main(["--subjects", "1", "--rows", str(rows), *extra])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_rows_of_one_method_are_read_when_named(tmp_path):
    from uncertainty_ceiling import row_psnrs

    rows = tmp_path / "rows.tsv"
    rows.write_text("a\tno-diffusion\tsub-01\t20.0\nb\tno-diffusion\tsub-01\t21.0\n")
    assert row_psnrs(rows, "no-diffusion", "b") == {"01": 21.0}


def test_the_psnrs_follow_e_plus_v_over_n_on_gaussian_draws():
    from uncertainty_ceiling import calibration_cost_db, hidden_variance, perfect_psnrs

    rng = np.random.default_rng(1)
    brain = np.ones((40, 40, 40), bool)
    sigma, data_range = 0.01, 0.2
    truth = rng.normal(0.1, sigma, size=brain.shape)  # the posterior is N(0.1, sigma^2) at every voxel
    draws = rng.normal(0.1, sigma, size=(64, *brain.shape))
    assert hidden_variance(draws, brain) == pytest.approx(sigma**2, rel=0.01)
    psnr = perfect_psnrs(draws, truth, brain, samples=4, data_range=data_range,
                         hidden_var=hidden_variance(draws, brain))
    best = 10 * np.log10(data_range**2 / sigma**2)  # the posterior mean's error is the truth's own spread
    assert psnr["posterior_mean"] == pytest.approx(best, abs=0.05)
    assert psnr["4"] == pytest.approx(best - 10 * np.log10(1.25), abs=0.05)
    assert psnr["1"] == pytest.approx(best - 10 * np.log10(2), abs=0.05)
    # a row exactly as good as the posterior mean: the mean of 4 draws lies 10 log10(1.25) below it
    assert calibration_cost_db(best, sigma**2, samples=4, data_range=data_range) == pytest.approx(
        10 * np.log10(1.25), abs=1e-9)


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


def test_a_rows_file_of_other_scans_is_refused_before_the_cohort_is_drawn(cohort, tmp_path, capsys):
    from uncertainty_ceiling import main

    rows = tmp_path / "rows.tsv"
    rows.write_text("m\tno-diffusion\tsub-99\t20.0\n")
    assert main(["--seed", "5", "--subjects", "2", "--scale", "0.3", "--control-fraction", "0.5",
                 "--samples", "2", "--draws", "2", "--rows", str(rows)]) == 2
    captured = capsys.readouterr()
    assert "none of its scans is a subject of this cohort" in captured.err
    assert captured.out == ""  # refused before any subject is drawn or printed
