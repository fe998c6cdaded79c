"""Recipe overrides are strict; the model card says plainly when the data were synthetic."""

import json

import pytest

from demist_bids.training.model_card import append_external_validation, render_model_card
from demist_bids.training.recipes import capped, load_recipe, recipe


def test_recipe_override_merges_tables_and_rejects_typos(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("batch_size = 4\n[steps]\nae = 7\n")
    merged = load_recipe("small", path)
    assert merged.batch_size == 4 and merged.steps["ae"] == 7
    assert merged.steps["diffusion"] == recipe("small").steps["diffusion"]
    path.write_text("[steps]\nautoencoder = 7\n")
    with pytest.raises(ValueError, match="autoencoder"):
        load_recipe("small", path)
    path.write_text("batchsize = 4\n")
    with pytest.raises(ValueError, match="batchsize"):
        load_recipe("small", path)
    assert capped(100, 0) == 100 and capped(100, 3) == 3


def test_the_decoded_term_on_z_c_needs_the_encoder_trained_in_the_streams_stage(tmp_path):
    # with a frozen conditioning encoder the term would have no gradient: refused, not ignored
    path = tmp_path / "r.toml"
    path.write_text("diffusion_cond_decoded_weight = 1.0\n")
    with pytest.raises(ValueError, match="needs cond_encoder_in_diffusion"):
        load_recipe("small", path)
    path.write_text("diffusion_cond_decoded_weight = 1.0\ncond_encoder_in_diffusion = true\n")
    assert load_recipe("small", path).diffusion_cond_decoded_weight == 1.0


def test_card_rendering(tmp_path):
    from demist_bids.models.config import preset

    config = preset("small").to_dict()
    config["card"] = {"training_data": {"name": "phantom", "synthetic": True, "scans": 8},
                      "intended_use": "demo only", "cross_validation": [
                          {"method": "demist", "psnr_mean": 25.0, "psnr_sd": 1.0, "ssim_mean": 0.9,
                           "ssim_sd": None, "mse_mean": 1e-3, "mse_sd": None,
                           "auc_combined_mean": None, "auc_combined_sd": None}]}
    text = render_model_card(config)
    assert "synthetic data" in text and "not a clinical model" in text
    assert "| demist | 25.00 ± 1.00 | 0.9000 | 1.000e-03 | n/a |" in text
    config["card"]["training_data"]["synthetic"] = False
    assert "not a clinical model" not in render_model_card(config)

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "README.md").write_text("# card\n")
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "evaluation_summary.tsv").write_text(
        "method\tpsnr_mean\tpsnr_sd\nlinear\t15.5\tn/a\ndemist\t22.25\tn/a\n")
    (tmp_path / "eval" / "paired_tests.tsv").write_text(
        "measure\tmethod\tbaseline\tn_scans\tmean_difference\twilcoxon_p\tttest_p\n"
        "psnr\tdemist\tlinear\t8\t6.75\t0.0078125\t0.001\n")
    readme = append_external_validation(tmp_path / "model", tmp_path / "eval" / "evaluation_summary.tsv", "cohort X")
    assert "External validation" in readme.read_text() and "| demist | 22.25 |" in readme.read_text()
    # kept in config.json, so re-rendering the card (e.g. after a sampler benchmark) keeps it
    stored = json.loads((tmp_path / "model" / "config.json").read_text())
    stored["sampling"].update(start=0.15)
    stored["card"]["sampler_benchmark"] = {"reference": "ddpm:1000", "speedup": 60.0, "psnr_drop_db": 0.1}
    rerendered = render_model_card(stored)
    assert "| demist | 22.25 |" in rerendered and "cohort X" in rerendered
    assert "noised to 0.15 of the schedule" in rerendered and "60.0x faster" in rerendered
    assert "guidance" not in rerendered  # no guidance, nothing said
    stored["sampling"].update(guidance=1.5)
    assert "classifier-free guidance 1.5 (the frozen backbone" in render_model_card(stored)
    stored["sampling"].update(unconditional="adapted")
    assert "guidance 1.5 (the backbone with its adapters and no condition as the" in render_model_card(stored)
    assert ("DEMIST minus the linear baseline: PSNR +6.750 dB (better; paired Wilcoxon p = 0.00781 "
            "over 8 scans).") in rerendered
    # A second cohort adds a section; the same cohort again replaces its own.
    (tmp_path / "eval" / "evaluation_summary.tsv").write_text(
        "method\tpsnr_mean\tpsnr_sd\nlinear\t15.5\tn/a\ndemist\t19.75\tn/a\n")
    append_external_validation(tmp_path / "model", tmp_path / "eval" / "evaluation_summary.tsv", "cohort Y")
    text = append_external_validation(tmp_path / "model", tmp_path / "eval" / "evaluation_summary.tsv",
                                      "cohort Y").read_text()
    assert text.count("## External validation") == 2 and text.index("cohort X") < text.index("cohort Y")
    assert "| demist | 22.25 |" in text and text.count("| demist | 19.75 |") == 1
    json.dumps(config)


def test_card_shows_the_whole_table(tmp_path):
    """Every method's row, every measure (voxel-wise and lesion-level AUCs), the pooled lesions, the differences."""
    from demist_bids.models.config import preset
    from demist_bids.training.model_card import comparison_tests, evaluation_summary

    methods = ["linear", "unet-regressor", "no-diffusion", "backbone-only", "ftldm", "controlnet", "lora",
               "demist", "demist-paper", "ae-ceiling", "measured"]
    measures = ["psnr", "ssim", "mse", "auc_proximal", "auc_distal", "auc_combined",
                "lesion_auc_proximal", "lesion_auc_distal", "lesion_auc_combined"]
    header = "method\t" + "\t".join(f"{m}_mean\t{m}_sd" for m in measures) + "\tn_folds\n"
    body = "".join(f"{m}\t" + "\t".join(f"{20 + i}\tn/a" for _ in measures) + "\t2\n" for i, m in enumerate(methods))
    (tmp_path / "evaluation_summary.tsv").write_text(header + body)
    (tmp_path / "lesion_auc_pooled.tsv").write_text(
        "method\tn_lesions\tlesion_auc_proximal\tlesion_auc_distal\tlesion_auc_combined\n"
        "demist\t12\t0.9\t0.8\t0.85\nno-diffusion\t12\t0.95\t0.9\t0.925\n")
    (tmp_path / "paired_tests.tsv").write_text(
        "measure\tmethod\tbaseline\tn_scans\tmean_difference\twilcoxon_p\tttest_p\n"
        "psnr\tdemist\tno-diffusion\t6\t1.0\t0.03125\t0.01\nssim\tdemist\tno-diffusion\t6\t0.1\t0.5\t0.5\n"
        "psnr\tdemist\tftldm\t6\t1.0\t0.03125\t0.01\n")
    config = preset("small").to_dict()
    config["card"] = {"cross_validation": evaluation_summary(tmp_path),
                      "cross_validation_tests": comparison_tests(tmp_path)}
    assert [(t["baseline"], t["measure"]) for t in config["card"]["cross_validation_tests"]] == [
        ("no-diffusion", "psnr")]
    text = render_model_card(config)
    for i, method in enumerate(methods):
        assert f"| {method} | {20 + i:.2f} |" in text and f"`{method}`" in text
    assert text.count("Lesion-level AUC combined") == 2  # the table's column and the pooled table's
    assert "| demist | 12 | 0.900 | 0.800 | 0.850 |" in text and "| no-diffusion | 12 | 0.950 |" in text
    assert ("DEMIST minus no diffusion (the PSR decoder on z_c): PSNR +5.000 dB (better; paired "
            "Wilcoxon p = 0.0312 over 6 scans)") in text
    assert "DEMIST with the paper's sampler minus no diffusion: PSNR +6.000 dB (better)" in text
    json.dumps(config)


def test_card_says_where_the_quality_comes_from_when_diagnostics_are_recorded():
    from demist_bids.models.config import preset
    from demist_bids.training.model_card import render_model_card

    config = preset("small").to_dict()
    assert "Where the quality comes from" not in render_model_card(config)
    config["card"]["stream_diagnostics"] = {
        "command": "python benchmarks/stream_diagnostics.py", "cohort": "seed 11",
        "psnr_db": {"no diffusion": 25.96, "pure noise": 8.02}, "cond_ratio_t500": 2.325, "prior_ratio": 1.526,
    }
    text = render_model_card(config)
    assert "## Where the quality comes from" in text
    assert "| no diffusion | 25.96 |" in text and "| pure noise | 8.02 |" in text and "2.33" in text
    assert text.index("Where the quality comes from") < text.index("## Cross-validation")


def test_the_sampler_line_names_a_window_blend_other_than_gaussian():
    from demist_bids.training.model_card import _sampler_line

    sampling = {"sampler": "ddim", "steps": 4}
    assert "blended" not in _sampler_line({"sampling": sampling})
    assert "blended" not in _sampler_line({"sampling": {**sampling, "autoencoder_blend": "gaussian"}})
    line = _sampler_line({"sampling": {**sampling, "autoencoder_blend": "constant", "autoencoder_overlap": 0.75}})
    assert "overlap by 0.75" in line and "blended with constant weights" in line
    assert "decoding" not in line
    line = _sampler_line({"sampling": {**sampling, "decoder_blend": "constant"}})
    assert "blended with gaussian weights when encoding, constant when decoding" in line
    assert "blended" not in _sampler_line({"sampling": {**sampling, "decoder_blend": "gaussian"}})


def test_the_condition_skip_key_builds_the_skip_and_the_card_names_it(tmp_path):
    from demist_bids.config import Config
    from demist_bids.training.model_card import _sampler_line
    from demist_bids.training.pipeline import CohortTrainer

    recipe_file = tmp_path / "recipe.toml"
    config = Config()
    config.execution.output_dir = tmp_path / "out"
    config.train.preset, config.train.recipe = "small", recipe_file
    built = {}
    for on in (False, True):
        recipe_file.write_text(f"condition_skip = {str(on).lower()}\n")
        trainer = CohortTrainer(config, None, None, "cpu")
        built[on] = trainer._model_config("demist", 0.2).streams.condition_skip
    assert built == {False: False, True: True}
    sampling = {"sampler": "ddim", "steps": 20}
    assert "not the paper's" in _sampler_line({"sampling": sampling, "streams": {"condition_skip": True}})
    assert "z_c" not in _sampler_line({"sampling": sampling, "streams": {"condition_skip": False}})


def test_the_terminal_snr_key_rescales_the_models_schedule_and_the_card_names_it(tmp_path):
    from demist_bids.config import Config
    from demist_bids.training.model_card import _sampler_line
    from demist_bids.training.pipeline import CohortTrainer

    recipe_file = tmp_path / "recipe.toml"
    config = Config()
    config.execution.output_dir = tmp_path / "out"
    config.train.preset, config.train.recipe = "small", recipe_file
    recipe_file.write_text("")
    assert CohortTrainer(config, None, None, "cpu")._model_config("demist", 0.2).schedule.terminal_snr is None
    recipe_file.write_text("terminal_snr = 1e-6\n")
    schedule = CohortTrainer(config, None, None, "cpu")._model_config("demist", 0.2).schedule
    assert (schedule.terminal_snr, schedule.prediction_type) == (1e-6, "v_prediction")
    sampling = {"sampler": "ddim", "steps": 20}
    line = _sampler_line({"sampling": sampling, "schedule": {"terminal_snr": 1e-6}})
    assert "terminal SNR of 1e-06" in line and "not the paper's" in line
    assert "terminal" not in _sampler_line({"sampling": sampling, "schedule": {"terminal_snr": None}})
    config.train.backbone = tmp_path / "bundle"  # a BraTS backbone was trained on the bundle's schedule
    with pytest.raises(ValueError, match="BraTS backbone"):
        CohortTrainer(config, None, None, "cpu")._model_config("demist", 0.2)
