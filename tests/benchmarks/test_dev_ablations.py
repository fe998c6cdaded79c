"""benchmarks/dev_ablations.py: packed cohorts, one worker end to end on a tiny model, the summary's verdict."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _volumes(n: int, shape=(40, 44, 36), seed: int = 0):
    from demist_bids.training.volumes import TrainingVolume

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        brain = np.zeros(shape, bool)
        brain[6:-6, 6:-6, 5:-5] = True
        lesion = np.zeros(shape, bool)
        lesion[18:22, 20:24, 16:19] = True
        wm = brain & ~lesion
        cond = (rng.random((2, *shape)) * brain).astype(np.float32)
        psr = (0.1 + 0.05 * cond[0] - 0.04 * lesion) * brain
        out.append(TrainingVolume(f"sub-{i:02d}", cond, psr.astype(np.float32), brain, lesion, wm, np.eye(4)))
    return out


def test_store_and_unpack_keep_every_array_inside_the_brain_box(tmp_path):
    from dev_ablations import store_volumes, unpack

    volumes = _volumes(2)
    store_volumes(volumes, tmp_path / "c.npz")
    back = unpack(tmp_path / "c.npz")
    assert [v.name for v in back] == ["sub-00", "sub-01"]
    assert unpack(tmp_path / "c.npz", 1)[0].name == "sub-00"
    v, w = volumes[0], back[0]
    # the box keeps 4 voxels around the brain: 6 - 4 = 2 cut from each low side
    assert w.brain.shape == (v.brain.shape[0] - 4, v.brain.shape[1] - 4, v.brain.shape[2] - 2)
    assert w.brain.sum() == v.brain.sum() and w.lesion.sum() == v.lesion.sum()
    assert w.cond.dtype == np.float32 and w.cond.shape[0] == 2
    np.testing.assert_allclose(w.psr[w.brain].mean(), v.psr[v.brain].mean(), rtol=1e-3)
    np.testing.assert_allclose(w.cond[:, w.brain].mean(), v.cond[:, v.brain].mean(), rtol=1e-3)


@pytest.fixture
def tiny_setup(tmp_path):
    import torch

    from demist_bids.models.demist import build_model
    from demist_bids.models.io import save_model
    from dev_ablations import store_volumes
    from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    save_model(model, tmp_path / "foundation", card={"name": "tiny-test"})
    store_volumes(_volumes(2, seed=1), tmp_path / "train.npz")
    store_volumes(_volumes(1, seed=2), tmp_path / "dev.npz")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("patch_size = [32, 32, 32]\nbatch_size = 1\n[steps]\ndiffusion = 2\n")
    return tmp_path, recipe


def _worker_args(root: Path, recipe: Path, method: str, grid: str, *extra: str, work: bool = True) -> list[str]:
    """A ``worker`` command line on the tiny setup's files, one thread, on the CPU (no ``--out``)."""
    return ["worker", "--method", method, "--train", str(root / "train.npz"), "--dev", str(root / "dev.npz"),
            "--foundation", str(root / "foundation"), "--recipe", str(recipe), "--device", "cpu", "--grid", grid,
            "--threads", "1", *(["--work", str(root / "work")] if work else []), *extra]


def _worker_rows(root: Path, recipe: Path, method: str, grid: str, *extra: str) -> list[dict]:
    """Run one ``worker`` into ``root/out`` and return the rows it wrote."""
    from dev_ablations import FIELDS, main

    (root / "out").mkdir()
    assert main([*_worker_args(root, recipe, method, grid, *extra), "--out", str(root / "out")]) == 0
    return list(csv.DictReader((root / "out" / f"rows-{method}.tsv").open(), FIELDS, delimiter="\t"))


def test_a_worker_trains_one_method_and_scores_every_row(tiny_setup):
    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "controlnet", "tiny")
    # no diffusion, the default sampler, then the tiny grid's two pure-noise rows
    assert [r["row"] for r in rows] == ["no-diffusion", "default-2@0.15-g1.5", "ddim2x2-g1.5", "ddim1x1-g1"]
    assert all(r["method"] == "controlnet" and r["scan"] == "sub-00" for r in rows)
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    assert np.isfinite(float(rows[2]["spearman_std_err"]))  # two samples: a std to correlate
    assert rows[3]["spearman_std_err"] == "nan"  # one sample: none
    # the level before the clip to the PSR range: for no diffusion and one-sample rows, not for means
    assert [np.isfinite(float(r["raw_bias"])) for r in rows] == [True, False, False, True]
    assert (root / "work" / "diffusion-controlnet").is_dir()  # the stage ran (its checkpoints)


def test_the_level_grid_stops_one_chain_after_1_2_4_and_20_steps(tiny_setup):
    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "controlnet", "level")
    assert [r["row"] for r in rows][2:] == ["ddim1x1-g1.5", "ddim2x1-g1.5", "ddim4x1-g1.5", "ddim20x1-g1.5"]
    bias = [float(r["bias"]) for r in rows[2:]]
    assert all(np.isfinite(bias)) and len(set(bias)) == 4  # four different stopping points, each with its level


def test_the_noise_scale_grid_scales_one_chain_and_its_scale_one_row_is_the_plain_chain(tiny_setup):
    """``--grid noise-scale``: one DDIM-20 chain per scale, named by it; scale 1 is the level grid's DDIM-20
    row to the last digit (the same chain, reloaded), the other scales move the map's level; ``--noise-scale``
    gives any grid's chains one scale."""
    from dev_ablations import FIELDS, main

    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "controlnet", "noise-scale")
    names = [r["row"] for r in rows][2:]
    assert names == ["ddim20x1-g1.5", "ddim20x1-g1.5-e0.98", "ddim20x1-g1.5-e0.99", "ddim20x1-g1.5-e1.01",
                     "ddim20x1-g1.5-e1.02", "ddim20x1-g1.5-e1.04"]
    bias = [float(r["bias"]) for r in rows[2:]]
    assert all(np.isfinite(bias)) and len(set(bias)) == 6
    (root / "plain").mkdir()
    assert main([*_worker_args(root, recipe, "controlnet", "level"), "--out", str(root / "plain"), "--resume"]) == 0
    plain = {r["row"]: r for r in csv.DictReader((root / "plain" / "rows-controlnet.tsv").open(), FIELDS,
                                                  delimiter="\t")}
    assert plain["ddim20x1-g1.5"]["psnr"] == rows[2]["psnr"] and plain["ddim20x1-g1.5"]["bias"] == rows[2]["bias"]
    # --noise-scale scales any grid's chains: the level grid at 1.02 ends on the noise-scale grid's 1.02 row
    (root / "scaled").mkdir()
    level = [*_worker_args(root, recipe, "controlnet", "level"), "--out", str(root / "scaled"), "--resume"]
    assert main([*level, "--noise-scale", "1.02"]) == 0
    again = list(csv.DictReader((root / "scaled" / "rows-controlnet.tsv").open(), FIELDS, delimiter="\t"))
    assert [r["row"] for r in again][:2] == ["no-diffusion", "default-2@0.15-g1.5"]  # not sampled chains: as is
    assert [r["row"] for r in again][-1] == "ddim20x1-g1.5-e1.02"
    assert again[-1]["psnr"] == rows[6]["psnr"] and again[-1]["bias"] == rows[6]["bias"]
    # a scale on the grid that sets its own, or a scale of zero, is refused before anything is written
    for bad in (["--grid", "noise-scale", "--noise-scale", "1.02"], ["--grid", "truth-noised", "--noise-scale", "1.02"],
                ["--grid", "latent-noise", "--noise-scale", "1.02"], ["--noise-scale", "0"]):
        (root / "refused").mkdir()
        args = [*_worker_args(root, recipe, "controlnet", "level"), "--out", str(root / "refused"), *bad]
        assert main(args) == 2 and not any((root / "refused").iterdir())
        (root / "refused").rmdir()


def test_the_truth_noised_grid_scores_the_estimate_from_the_noised_measured_map(tiny_setup):
    """``--grid truth-noised``: one clean estimate per timestep from the measured PSR's noised latent, each
    its own map (what the estimate is: tests/inference/test_sampler.py; the tiny model is untrained)."""
    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "controlnet", "truth-noised")
    assert [r["row"] for r in rows][2:] == ["truth-t999-g1.5", "truth-t749-g1.5", "truth-t499-g1.5",
                                            "truth-t249-g1.5"]
    bias = [float(r["bias"]) for r in rows[2:]]
    assert all(np.isfinite(bias)) and len(set(bias)) == 4


def _give_the_foundation_a_blend(root: Path, weight: float) -> None:
    """Rewrite the tiny setup's foundation with a fitted blend towards z_c of ``weight`` at every t."""
    import shutil

    from demist_bids.models.config import AnchorConfig
    from demist_bids.models.io import load_model, save_model

    foundation = load_model(root / "foundation")
    foundation.config.anchor = AnchorConfig(timesteps=[0, 999], weights=[[weight] * 8, [weight] * 8])
    shutil.rmtree(root / "foundation")
    save_model(foundation, root / "foundation", card={"name": "tiny-test"})


def test_the_truth_noised_rows_leave_out_a_blend_the_model_carries(tiny_setup):
    """The truth-noised rows are read beside pure-noise chains run without the model's blend towards z_c,
    so they leave it out too (session 32): scored on the foundation itself, a full blend changes nothing."""
    import shutil

    root, recipe = tiny_setup
    plain = _worker_rows(root, recipe, "foundation", "truth-noised")
    _give_the_foundation_a_blend(root, 1.0)  # every clean estimate would be z_c's
    shutil.rmtree(root / "out")
    blended_foundation = _worker_rows(root, recipe, "foundation", "truth-noised")
    assert [r["psnr"] for r in blended_foundation] == [r["psnr"] for r in plain]
    nodiff = float(blended_foundation[0]["psnr"])
    assert all(abs(float(r["psnr"]) - nodiff) > 1e-3 for r in blended_foundation[2:])  # not z_c's map


def test_a_trained_method_does_not_inherit_the_foundations_blend(tiny_setup):
    """The foundation's blend towards z_c was fitted on its own streams, not on the ones ``run`` trains."""
    from dev_ablations import train_method, unpack

    from demist_bids.models.io import load_model
    from demist_bids.training.recipes import load_recipe

    root, recipe_path = tiny_setup
    _give_the_foundation_a_blend(root, 0.5)
    foundation = load_model(root / "foundation")
    assert foundation.anchored
    recipe = load_recipe(foundation.config.preset, recipe_path)
    model = train_method("controlnet", foundation, recipe, unpack(root / "train.npz"), 1, 0, "cpu", root / "work")
    assert not model.anchored


def test_the_latent_noise_grid_decodes_the_measured_maps_latent_with_more_and_more_noise(tiny_setup):
    """``--grid latent-noise`` on the foundation (no training): one decoded map per noise level, each with
    its level before and after the clip."""
    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "foundation", "latent-noise")
    assert [r["row"] for r in rows][2:] == ["latent-noise0", "latent-noise0.1", "latent-noise0.2",
                                            "latent-noise0.3", "latent-noise0.5"]
    bias = [float(r["bias"]) for r in rows[2:]]
    assert all(np.isfinite(bias)) and len(set(bias)) == 5
    assert all(np.isfinite(float(r["raw_bias"])) for r in rows[2:])


def test_the_guidance_interval_grid_guides_part_of_the_chain_beside_all_or_none_of_it(tiny_setup):
    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "controlnet", "guidance-interval")
    assert [r["row"] for r in rows][2:] == ["ddim20x4-g1", "ddim20x4-g2", "ddim20x4-g2@t0-500",
                                           "ddim20x4-g2@t500-1000"]
    psnr = [float(r["psnr"]) for r in rows[2:]]
    assert all(np.isfinite(psnr)) and len(set(psnr)) == 4  # each interval is neither no guidance nor guidance everywhere


def test_the_stochastic_grid_scores_ancestral_chains_beside_plain_ddim(tiny_setup):
    """``--grid stochastic``: DDIM-20 and ancestral (DDPM posterior) chains of 20 and 50 steps from the same
    seed, each its own map; ``--noise-scale`` is refused with it."""
    from dev_ablations import main

    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "controlnet", "stochastic")
    assert [r["row"] for r in rows][2:] == ["ddim20x1-g1.5", "ddpm20x1-g1.5", "ddpm50x1-g1.5"]
    assert len({r["psnr"] for r in rows[2:]}) == 3 and all(np.isfinite(float(r["bias"])) for r in rows[2:])
    (root / "refused").mkdir()
    args = [*_worker_args(root, recipe, "controlnet", "stochastic"), "--out", str(root / "refused")]
    assert main([*args, "--noise-scale", "1.02"]) == 2 and not any((root / "refused").iterdir())
    (root / "refused").rmdir()


def test_a_worker_trains_with_local_semantic_tokens_and_scores_the_order_row(tiny_setup):
    from demist_bids.training.checkpoints import load_checkpoint

    root, recipe = tiny_setup
    rows = _worker_rows(root, recipe, "ftldm", "order", "--token-stride", "2")
    # the order grid is target 4's row alone, for every method
    assert [r["row"] for r in rows] == ["no-diffusion", "default-2@0.15-g1.5", "ddim20x4-g1.5"]
    state = load_checkpoint(root / "work" / "diffusion-ftldm")
    keys = [k for k in _flat_keys(state) if k.endswith("log_sharpness")]
    assert keys  # the stream was built and trained with the local layout (its distance bias is a weight)


def test_a_resumed_worker_reloads_the_finished_training_and_scores_it_the_same(tiny_setup):
    from dev_ablations import FIELDS, main

    root, recipe = tiny_setup
    common = _worker_args(root, recipe, "ftldm", "tiny", "--token-stride", "2")
    for run in ("first", "again"):
        (root / run).mkdir()
        assert main([*common, "--out", str(root / run), *(["--resume"] if run == "again" else [])]) == 0
        if run == "first":
            log = (root / "work" / "diffusion-ftldm" / "log.csv").read_text()
    assert (root / "work" / "diffusion-ftldm" / "log.csv").read_text() == log  # not one step trained again
    rows = [list(csv.DictReader((root / run / "rows-ftldm.tsv").open(), FIELDS, delimiter="\t"))
            for run in ("first", "again")]
    assert [r["psnr"] for r in rows[0]] == [r["psnr"] for r in rows[1]]  # the same weights, the same seeds


def test_the_adapted_unconditional_branch_changes_the_guided_rows_only(tiny_setup):
    """``--unconditional adapted``: guided rows say so and differ; an unguided row is the same model alone."""
    from dev_ablations import FIELDS, main

    root, recipe = tiny_setup
    common = _worker_args(root, recipe, "foundation", "tiny")
    rows = {}
    for branch in ("backbone", "adapted"):
        (root / branch).mkdir()
        assert main([*common, "--out", str(root / branch), "--unconditional", branch]) == 0
        rows[branch] = list(csv.DictReader((root / branch / "rows-foundation.tsv").open(), FIELDS, delimiter="\t"))
    assert [r["row"] for r in rows["adapted"]] == [
        "no-diffusion", "default-2@0.15-g1.5-adapted", "ddim2x2-g1.5-adapted", "ddim1x1-g1"]
    frozen, adapted = ({r["row"].removesuffix("-adapted"): float(r["psnr"]) for r in rows[b]} for b in rows)
    assert frozen["ddim1x1-g1"] == adapted["ddim1x1-g1"] and frozen["no-diffusion"] == adapted["no-diffusion"]
    assert frozen["ddim2x2-g1.5"] != adapted["ddim2x2-g1.5"]  # the foundation's LoRA is not zero


def test_run_refuses_an_unknown_method_before_starting_anything(tmp_path, capsys):
    from dev_ablations import main

    out = tmp_path / "out"
    code = main(["run", "--train", "t.npz", "--dev", "d.npz", "--foundation", "f", "--recipe", "r.toml",
                 "--out", str(out), "--work", str(tmp_path / "work"), "--methods", "demist,unet"])
    assert code == 2
    assert "unknown --methods unet" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "work").exists()  # nothing half-made


def _flat_keys(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flat_keys(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


def _write_rows(path: Path, records) -> None:
    """A rows file as the workers write it (no header); every record is filled with plausible metrics."""
    from dev_ablations import FIELDS

    base = {"ssim": 0.9, "auc_combined": 0.9, "lesion_auc": 0.9, "spearman_std_err": "nan", "seconds": 1}
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, delimiter="\t")
        writer.writerows({**base, **record} for record in records)


def _rows(path: Path, psnr: dict) -> None:
    _write_rows(path, ({"method": method, "row": row, "scan": scan, "psnr": value}
                       for (method, row), value in psnr.items() for scan in ("sub-01", "sub-02")))


@pytest.mark.parametrize(("lora", "expected"), [(20.5, True), (17.0, False)])
@pytest.mark.parametrize("grid", ["order", "order-g1"])
def test_the_summary_judges_the_papers_order(tmp_path, lora, expected, grid):
    from dev_ablations import GRIDS, row_label, summarize

    paper = row_label(GRIDS[grid][0])
    other = "ddim20x4-g1" if grid == "order" else "ddim20x4-g1.5"
    # the other guidance's row has the opposite verdict: only the grid's own row may decide
    _rows(tmp_path / "rows-all.tsv", {
        ("demist", paper): 21.6, ("demist", "ddim2x4-g1.5"): 20.7, ("demist", "no-diffusion"): 22.6,
        ("controlnet", paper): 20.6, ("lora", paper): lora, ("ftldm", paper): 18.0,
        ("demist", other): 19.0 if expected else 21.0, ("controlnet", other): 20.0,
        ("lora", other): 17.0 if expected else 19.0, ("ftldm", other): 18.5})
    line = summarize(tmp_path, paper)
    assert line == f"best_pure_noise={paper} psnr_db=21.60 nodiff_psnr_db=22.60 order_ok={expected}"
    assert (tmp_path / "summary.tsv").is_file() and (tmp_path / "rows.tsv").is_file()


def test_score_rates_one_model_with_its_blend_towards_z_c(tiny_setup):
    from dev_ablations import FIELDS, main

    from demist_bids.models.config import AnchorConfig
    from demist_bids.models.io import load_model, save_model

    root, _ = tiny_setup
    common = ["score", "--dev", str(root / "dev.npz"), "--out", str(root / "scored"), "--grid", "tiny-anchored",
              "--threads", "1"]
    assert main([*common, "--model", str(root / "foundation")]) == 2  # no fitted blend: nothing to score
    model = load_model(root / "foundation")
    model.config.anchor = AnchorConfig(timesteps=[0, 999], weights=[[0.0] * 8, [1.0] * 8])
    save_model(model, root / "anchored")
    assert main([*common, "--model", str(root / "anchored")]) == 0
    rows = list(csv.DictReader((root / "scored" / "rows-demist.tsv").open(), FIELDS, delimiter="\t"))
    assert [r["row"] for r in rows] == ["no-diffusion", "default-2@0.15-g1.5", "ddim2x1-g1.5-anchored"]
    assert all(np.isfinite(float(r["psnr"])) for r in rows)


def _score_own_sampler(root: Path, grid: str, precision: str) -> tuple[list[dict], Path]:
    """``score --grid GRID`` on the tiny model saved with a stored DDIM-2, guidance-1 sampler in ``precision``."""
    from dev_ablations import FIELDS, main

    from demist_bids.models.io import load_model, save_model

    model = load_model(root / "foundation")
    sampling = model.config.sampling
    sampling.sampler, sampling.steps, sampling.start, sampling.guidance = "ddim", 2, 1.0, 1.0
    sampling.precision = precision
    save_model(model, root / f"own-{grid}")
    out = root / f"scored-{grid}"
    assert main(["score", "--dev", str(root / "dev.npz"), "--out", str(out), "--grid", grid, "--threads", "1",
                 "--model", str(root / f"own-{grid}"), "--label", "student"]) == 0
    return list(csv.DictReader((out / "rows-student.tsv").open(), FIELDS, delimiter="\t")), out


def test_score_own_rates_the_models_stored_sampler_in_each_precision(tiny_setup):
    rows, _ = _score_own_sampler(tiny_setup[0], "own", "bf16")
    assert [r["row"] for r in rows] == ["no-diffusion", "own-ddim2-g1@bf16", "own-ddim2-g1@fp32"]
    assert all(np.isfinite(float(r["psnr"])) for r in rows)


def test_score_own_stored_rates_the_stored_precision_only(tiny_setup):
    rows, _ = _score_own_sampler(tiny_setup[0], "own-stored", "bf16")
    assert [r["row"] for r in rows] == ["no-diffusion", "own-ddim2-g1@bf16"]


def test_score_spread_measures_target_2_on_the_models_own_sampler(tiny_setup):
    from dev_ablations import SPREAD_SAMPLES, spread_verdict

    rows, out = _score_own_sampler(tiny_setup[0], "spread", "fp32")
    assert [r["row"] for r in rows] == ["no-diffusion", "own-ddim2-g1x1@fp32", f"own-ddim2-g1x{SPREAD_SAMPLES}@fp32"]
    assert rows[1]["spearman_std_err"] == "nan"  # one sample: no std
    assert -1 <= float(rows[2]["spearman_std_err"]) <= 1
    assert rows[1]["mean_std"] == "nan" and float(rows[2]["mean_std"]) >= 0
    assert all(0 <= float(r["smooth_share"]) <= 1 and -1 <= float(r["oracle_level"]) <= 1 for r in rows)
    line = spread_verdict(out / "rows-student.tsv")
    assert line.startswith("one_sample_psnr_db=") and "better=" in line and "target2_met=" in line


def _spread_rows(path: Path, one: list[float], several: list[float], rho: float) -> None:
    def records():
        for i, (a, b) in enumerate(zip(one, several)):
            base = {"method": "m", "scan": f"sub-{i:02d}", "bias": 0.0, "smooth_share": 0.5, "oracle_smooth": 0.6,
                    "oracle_level": 0.2, "mean_std": 0.001}
            yield {**base, "row": "no-diffusion", "psnr": 20.0}
            yield {**base, "row": "own-ddim4-g1x1@bf16", "psnr": a}
            yield {**base, "row": "own-ddim4-g1x4@bf16", "psnr": b, "spearman_std_err": rho}

    _write_rows(path, records())


@pytest.mark.parametrize(("several", "rho", "met"), [
    ([21.0, 21.2], 0.5, True),    # the mean of 4 better and a std that predicts the error
    ([21.0, 21.2], 0.39, False),  # the std does not predict it well enough
    ([20.9, 20.8], 0.8, False),   # the mean of 4 is worse than one sample
])
def test_the_spread_verdict_needs_both_clauses_of_target_2(tmp_path, several, rho, met):
    from dev_ablations import spread_verdict

    _spread_rows(tmp_path / "rows.tsv", [20.95, 21.0], several, rho)
    line = spread_verdict(tmp_path / "rows.tsv")
    assert f"target2_met={met}" in line
    assert f"better={sum(b > a for a, b in zip([20.95, 21.0], several))}/2" in line
    assert f"spearman_std_err={rho:.3f} target2_met={met} mean_std=0.00100" in line
    assert line.endswith("oracle_smooth=0.600 oracle_level=0.200")


def test_error_structure_separates_an_offset_from_fine_noise_and_a_level_error():
    from dev_ablations import error_structure

    brain = np.zeros((30, 30, 30), bool)
    brain[5:25, 5:25, 5:25] = True
    truth = np.random.default_rng(1).random(brain.shape)
    offset = error_structure(truth + 0.01, truth, brain, np.eye(4))
    assert offset["bias"] == pytest.approx(0.01) and offset["smooth_share"] == pytest.approx(1.0, abs=1e-6)
    noise = error_structure(truth + np.random.default_rng(0).normal(0, 0.01, brain.shape), truth, brain, None)
    assert abs(noise["bias"]) < 1e-3 and noise["smooth_share"] < 0.05
    assert abs(noise["oracle_smooth"]) < 0.2 and abs(noise["oracle_level"]) < 0.2  # nothing could predict it
    level = error_structure(1.1 * truth, truth, brain, None)  # a 10 % level error: grows with the PSR
    assert level["oracle_level"] > 0.95
    # noise whose size grows along x: where the error is large is known to 4 mm, though not its sign
    growing = np.linspace(0, 1, brain.shape[0])[:, None, None] * np.random.default_rng(0).normal(0, 0.01, brain.shape)
    assert error_structure(truth + growing, truth, brain, None)["oracle_smooth"] > 0.35


def test_prior_trains_a_fresh_backbone_on_the_other_domain_and_keeps_the_latent_space(tiny_setup):
    import torch

    from dev_ablations import main

    from demist_bids.models.io import load_model

    root, recipe = tiny_setup
    recipe.write_text("patch_size = [32, 32, 32]\nbatch_size = 1\n[steps]\nbackbone = 2\ndiffusion = 2\n")
    common = ["prior", "--train", str(root / "train.npz"), "--foundation", str(root / "foundation"),
              "--recipe", str(recipe), "--work", str(root / "work"), "--threads", "1"]
    assert main([*common, "--domain", "flair", "--out", str(root / "flair")]) == 0
    assert main([*common, "--domain", "t1w", "--out", str(root / "t1w")]) == 0
    foundation, flair, t1w = (load_model(root / name) for name in ("foundation", "flair", "t1w"))
    # the latent space the streams work in is the foundation's: same autoencoders, same statistics
    for a, b in zip(foundation.psr_autoencoder.state_dict().values(), flair.psr_autoencoder.state_dict().values()):
        assert torch.equal(a, b)
    assert flair.config.latent_shift == foundation.config.latent_shift
    assert flair.config.latent_channel_scale == foundation.config.latent_channel_scale
    assert flair.config.psr_latent_scale == foundation.config.psr_latent_scale
    # a backbone of its own, and which image it learned matters (same seed, different domain)
    fb, pb, tb = (m.backbone.state_dict() for m in (foundation, flair, t1w))
    assert any(not torch.equal(fb[k], pb[k]) for k in fb)
    assert any(not torch.equal(pb[k], tb[k]) for k in pb)
    # no fitted blend and no card carried over from the foundation; the card says what the prior is
    assert not flair.anchored
    assert set(flair.config.card) == {"prior"} and "FLAIR channel" in flair.config.card["prior"]
    # the streams are untrained: the model equals its backbone
    z_t, z_c, t = torch.randn(1, 8, 8, 8, 8), torch.randn(1, 8, 8, 8, 8), torch.tensor([500])
    with torch.no_grad():
        torch.testing.assert_close(flair.predict_noise(z_t, t, z_c), flair.backbone_noise(z_t, t))


def test_prior_sets_the_attention_levels_the_streams_reach(tiny_setup):
    from dev_ablations import main, train_method, unpack
    from monai.networks.blocks import SABlock

    from demist_bids.models.io import load_model
    from demist_bids.training.recipes import load_recipe

    root, recipe = tiny_setup
    recipe.write_text("patch_size = [32, 32, 32]\nbatch_size = 1\n[steps]\nbackbone = 1\ndiffusion = 1\n")
    common = ["prior", "--train", str(root / "train.npz"), "--foundation", str(root / "foundation"),
              "--recipe", str(recipe), "--work", str(root / "work"), "--threads", "1"]
    with pytest.raises(SystemExit, match="3 comma-separated"):
        main([*common, "--out", str(root / "bad"), "--attention-levels", "0,1"])
    with pytest.raises(SystemExit, match="0/1 values"):
        main([*common, "--out", str(root / "bad"), "--attention-levels", "0,2,1"])
    assert not (root / "bad").exists()
    assert main([*common, "--out", str(root / "coarse"), "--attention-levels", "0,0,1"]) == 0
    foundation, coarse = load_model(root / "foundation"), load_model(root / "coarse")
    assert foundation.config.unet.attention_levels == [False, True, True]
    assert coarse.config.unet.attention_levels == [False, False, True]
    assert coarse.config.unet.num_head_channels == [0, 0, max(foundation.config.unet.num_head_channels)]
    assert "attention levels --A" in coarse.config.card["prior"]

    def blocks(model):
        return sum(isinstance(m, SABlock) for m in model.backbone.modules())

    assert 0 < blocks(coarse) < blocks(foundation)
    # a method trained on the prior puts LoRA (Q, K, V, O) and a cross-attention on each of its blocks, no more
    lora = train_method("lora", coarse, load_recipe(coarse.config.preset, recipe), unpack(root / "train.npz"), 1, 0,
                        "cpu", root / "work")
    adapters = [n for n, _ in lora.backbone.named_parameters() if n.endswith("lora_A.default.weight")]
    assert len(adapters) == 3 * blocks(coarse)
    assert len(lora.semantic.cross_attentions) == blocks(coarse)


def test_sdpa_scoring_keeps_fused_attention_on_the_cpu_and_the_same_numbers(tiny_setup):
    import torch
    from dev_ablations import _always_sdpa

    from demist_bids.inference.sampler import prepare_volume
    from demist_bids.models.io import load_model

    root, _ = tiny_setup
    plain, fused = load_model(root / "foundation"), load_model(root / "foundation")
    _always_sdpa(fused)
    volume = np.random.default_rng(0).random((2, 24, 24, 24)).astype(np.float32)
    prepare_volume(plain, volume, "cpu", "fp32")
    prepare_volume(fused, volume, "cpu", "fp32")  # the sampler switches fused attention off on the CPU...

    def flags(model):
        return {m.use_flash_attention for m in model.modules() if hasattr(m, "use_flash_attention")}

    assert flags(plain) == {False} and flags(fused) == {True}  # ...but not for a model scored with --sdpa
    z_t, z_c, t = torch.randn(1, 8, 8, 8, 8), torch.randn(1, 8, 8, 8, 8), torch.tensor([500])
    with torch.no_grad():
        torch.testing.assert_close(fused.predict_noise(z_t, t, z_c), plain.predict_noise(z_t, t, z_c),
                                   atol=1e-5, rtol=1e-4)


def test_train_method_takes_a_lora_rank_and_keeps_alpha_over_rank(tiny_setup):
    from dev_ablations import train_method, unpack

    from demist_bids.models.io import load_model
    from demist_bids.training.recipes import load_recipe

    root, recipe_path = tiny_setup
    foundation = load_model(root / "foundation")
    base = foundation.config.streams
    recipe = load_recipe(foundation.config.preset, recipe_path)
    model = train_method("lora", foundation, recipe, unpack(root / "train.npz"), 1, 0, "cpu", root / "work",
                         lora_rank=2 * base.lora_rank)
    streams = model.config.streams
    assert streams.lora_rank == 2 * base.lora_rank
    assert streams.lora_alpha / streams.lora_rank == base.lora_alpha / base.lora_rank
    ranks = {p.shape[0] for n, p in model.named_parameters() if n.endswith("lora_A.default.weight")}
    assert ranks == {2 * base.lora_rank}  # the adapters were built with it


def test_a_worker_trains_lora_b_at_the_multiple_it_is_given(tiny_setup):
    from dev_ablations import main

    from demist_bids.training.checkpoints import load_checkpoint

    root, recipe = tiny_setup
    common = _worker_args(root, recipe, "lora", "tiny", "--scans", "1", work=False)
    scales = {}
    for name, extra in (("plain", []), ("faster", ["--lora-b-lr-multiplier", "8"])):
        (root / name).mkdir()
        assert main([*common, "--out", str(root / name), "--work", str(root / f"work-{name}"), *extra]) == 0
        groups = load_checkpoint(root / f"work-{name}" / "diffusion-lora")["optimizers"]["streams"]["param_groups"]
        scales[name] = [g.get("lr_scale", 1.0) for g in groups]
    assert scales["plain"] == [1.0, 1.0]  # the recipe's: B with the other weights, the gates at their multiple
    assert scales["faster"] == [1.0, 1.0, 8.0]  # B in a group of its own


def test_another_sample_seed_redraws_the_sampled_rows_and_says_so(tiny_setup):
    """``--sample-seed``: the same checkpoint scored again with other noise; the rows name their seed, the
    no-diffusion row (no noise drawn) is the same and every sampled row differs."""
    from dev_ablations import FIELDS, main

    root, recipe = tiny_setup
    common = _worker_args(root, recipe, "ftldm", "tiny", "--token-stride", "2")
    rows = {}
    for seed in (0, 3):
        (root / f"s{seed}").mkdir()
        args = [*common, "--out", str(root / f"s{seed}"), "--sample-seed", str(seed), *(["--resume"] if seed else [])]
        assert main(args) == 0
        rows[seed] = list(csv.DictReader((root / f"s{seed}" / "rows-ftldm.tsv").open(), FIELDS, delimiter="\t"))
    assert [r["row"] for r in rows[3]] == ["no-diffusion", "default-2@0.15-g1.5-s3", "ddim2x2-g1.5-s3", "ddim1x1-g1-s3"]
    first, again = ({r["row"].removesuffix("-s3"): float(r["psnr"]) for r in rows[s]} for s in rows)
    assert first.keys() == again.keys()
    assert first["no-diffusion"] == again["no-diffusion"]
    assert all(first[row] != again[row] for row in first if row != "no-diffusion")


def _run_rows(folder: Path, method: str, psnr: list[float], row: str = "ddim20x4-g1.5") -> Path:
    """One ``run`` output folder of one method: ``row`` and a no-diffusion row per scan."""
    folder.mkdir(parents=True)
    _write_rows(folder / f"rows-{method}.tsv",
                ({"method": method, "row": name, "scan": f"sub-{i + 1:02d}", "psnr": score}
                 for i, value in enumerate(psnr) for name, score in ((row, value), ("no-diffusion", 30.0))))
    return folder


@pytest.mark.parametrize(("b_runs", "holds"), [
    ([[19.0, 20.0, 15.0], [19.5, 20.5, 15.5], [19.2, 20.2, 15.2]], True),   # every full run above every other
    ([[19.0, 20.0, 15.0], [19.5, 20.5, 15.5], [21.0, 21.6, 17.0]], False),  # one lucky seed overlaps
    ([[19.75, 20.75, 17.25], [19.8, 20.8, 17.3], [19.85, 20.85, 17.35]], False),  # all below, by less than 0.3 dB
])
def test_the_seed_verdict_needs_the_margin_and_every_run_above(tmp_path, b_runs, holds):
    from dev_ablations import seed_verdict

    # the first full-model run scored 6 scans; scans 4-6 would flip the verdict if they were counted
    a = [_run_rows(tmp_path / "a0", "demist", [20.4, 21.4, 16.4, 0.0, 0.0, 0.0]),
         _run_rows(tmp_path / "a1", "demist", [20.5, 21.5, 16.5]),
         _run_rows(tmp_path / "a2", "demist", [20.6, 21.6, 16.6])]
    b = [_run_rows(tmp_path / f"b{k}", "controlnet", scores) for k, scores in enumerate(b_runs)]
    line, per_run = seed_verdict({"demist": a, "controlnet": b}, "ddim20x4-g1.5")
    assert line.endswith(f"runs=3+3 scans=3 measure=psnr holds={holds}")
    assert per_run.score.round(3).tolist()[:3] == [19.4, 19.5, 19.6]
    expected_gap = 19.5 - np.mean([np.mean(s) for s in b_runs])
    assert f"gap_db={expected_gap:+.3f}" in line
    if holds:
        assert "mannwhitney_p=0.050" in line
    with pytest.raises(ValueError, match="needs every row's bias"):  # these rows carry no bias
        seed_verdict({"demist": a, "controlnet": b}, "ddim20x4-g1.5", psr_scale=0.2)


def test_seeds_refuses_one_run_per_method(tmp_path, capsys):
    from dev_ablations import main

    a = _run_rows(tmp_path / "a0", "demist", [20.0])
    b = [_run_rows(tmp_path / f"b{k}", "controlnet", [19.0]) for k in range(2)]
    assert main(["seeds", "--a", f"demist={a}", "--b", f"controlnet={b[0]},{b[1]}"]) == 2
    assert "two runs or more" in capsys.readouterr().err
    a2 = _run_rows(tmp_path / "a1", "demist", [20.5])
    assert main(["seeds", "--a", f"demist={a},{a2}", "--b", f"controlnet={b[0]},{b[1]}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("runs=2+2 scans=1 measure=psnr holds=True")


def test_the_level_free_score_takes_each_scans_offset_out(tmp_path, capsys):
    """``seeds --psr-scale``: ControlNet's runs are below only by a level offset (the mean error inside the
    brain); with the offset taken out they are above, and the verdict turns."""
    from dev_ablations import level_free_psnr, main

    scale = 0.2

    def with_offset(level_free, bias):  # the PSNR a scan has when its level-free PSNR and offset are these
        return float(-10 * np.log10(10 ** (-level_free / 10) + (bias / scale) ** 2))

    def run(folder, method, level_free, bias):
        folder.mkdir()
        _write_rows(folder / f"rows-{method}.tsv", (
            {"method": method, "row": "ddim20x4-g1.5", "scan": f"sub-0{i}", "bias": bias,
             "psnr": with_offset(level_free + 0.1 * i, bias)} for i in (1, 2)))
        return str(folder)

    a = ",".join(run(tmp_path / f"a{k}", "demist", 22.0 + 0.05 * k, 0.0) for k in range(3))
    b = ",".join(run(tmp_path / f"b{k}", "controlnet", 22.8 + 0.05 * k, 0.02 * (k + 1)) for k in range(3))
    assert main(["seeds", "--a", f"demist={a}", "--b", f"controlnet={b}"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("measure=psnr holds=True")
    assert main(["seeds", "--a", f"demist={a}", "--b", f"controlnet={b}", "--psr-scale", str(scale)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith("measure=level_free holds=False")
    assert "gap_db=-0.800" in out[-1] and "controlnet_db=23.000" in out[-1]
    assert level_free_psnr(21.0, 0.0, scale) == pytest.approx(21.0)


def test_levelled_gives_each_run_no_diffusions_level(tmp_path, capsys):
    """``levelled``: a chain below no diffusion only by its level offset comes level with it once its offset
    is no diffusion's; one with error about its own level stays below; rows without a bias are skipped."""
    from dev_ablations import levelled_psnr, main

    scale = 0.2

    def with_offset(level_free, bias):
        return float(-10 * np.log10(10 ** (-level_free / 10) + (bias / scale) ** 2))

    def run(folder, chain_level_free):
        folder.mkdir()
        _write_rows(folder / "rows-demist.tsv", [
            *({"method": "demist", "row": "no-diffusion", "scan": s, "bias": 0.005, "psnr": with_offset(24.0, 0.005),
               "smooth_share": 0.5} for s in ("sub-01", "sub-02")),
            *({"method": "demist", "row": "ddim20x4-g1.5", "scan": s, "bias": 0.02,
               "psnr": with_offset(chain_level_free, 0.02), "smooth_share": 0.5} for s in ("sub-01", "sub-02")),
            {"method": "demist", "row": "ddim20x1-g1.5", "scan": "sub-01", "bias": "nan", "psnr": 20.0},
        ])
        return str(folder)

    level_only, structure = run(tmp_path / "a", 24.0), run(tmp_path / "b", 23.0)
    assert main(["levelled", level_only, structure, "--psr-scale", str(scale)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "levelled_gap_db=+0.00" in lines[0] and "levelled_gap_db=-0.8" in lines[1]
    assert lines[-1] == "within_0.3_db=1"
    assert all("smooth_ratio=" in line and "fine_ratio=" in line for line in lines[:2])
    assert main(["levelled", level_only, "--psr-scale", str(scale), "--row", "ddim20x1-g1.5"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["within_0.3_db=0"]  # no bias: no line
    assert levelled_psnr(21.0, 0.01, 0.01, scale) == pytest.approx(21.0)
    assert main(["levelled", str(tmp_path / "absent"), "--psr-scale", "0.2"]) == 2


def test_error_parts_split_the_squared_error_by_its_smooth_share():
    import pandas as pd
    from dev_ablations import error_parts

    rows = pd.DataFrame({"psnr": [20.0], "smooth_share": [0.75], "bias": [0.01]})
    smooth, fine = error_parts(rows, 0.2)
    assert smooth == pytest.approx(0.01 * 0.75 - 0.05**2) and fine == pytest.approx(0.01 * 0.25)


def test_the_initial_weights_take_their_own_seed_apart_from_the_data(tiny_setup):
    """``--init-seed``: the streams' initial weights follow it, whatever seed draws the data; by default they
    follow ``--seed`` as before."""
    import torch
    from dev_ablations import train_method, unpack

    from demist_bids.models.io import load_model
    from demist_bids.training.recipes import load_recipe

    root, recipe_path = tiny_setup
    foundation = load_model(root / "foundation")
    recipe = load_recipe(foundation.config.preset, recipe_path)
    volumes = unpack(root / "train.npz")

    def streams(seed, init_seed=None):
        model = train_method("controlnet", foundation, recipe, volumes, 0, seed, "cpu",
                             root / f"work-{seed}-{init_seed}", init_seed=init_seed)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    data0, data1_init0, data1 = streams(0), streams(1, init_seed=0), streams(1)
    assert data0.keys() == data1.keys() and data0
    assert all(torch.equal(data0[n], data1_init0[n]) for n in data0)
    assert any(not torch.equal(data0[n], data1[n]) for n in data0)


def _export_args(root: Path, recipe: Path, out: str) -> list[str]:
    return ["export", "--train", str(root / "train.npz"), "--foundation", str(root / "foundation"),
            "--recipe", str(recipe), "--work", str(root / "work"), "--method", "controlnet", "--seed", "0",
            "--out", str(root / out), "--threads", "1"]


def test_export_saves_the_finished_runs_streams_with_the_papers_sampler(tiny_setup):
    """The exported directory holds exactly the weights the run scored, on the foundation's backbone."""
    import torch

    from demist_bids.models.io import load_model
    from demist_bids.models.unet import plain_state_dict
    from dev_ablations import main, train_method, unpack
    from demist_bids.training.recipes import load_recipe

    root, recipe = tiny_setup
    (root / "out").mkdir()
    assert main([*_worker_args(root, recipe, "controlnet", "tiny"), "--out", str(root / "out")]) == 0
    log = (root / "work" / "diffusion-controlnet" / "log.csv").read_text()
    assert main(_export_args(root, recipe, "candidate")) == 0
    assert (root / "work" / "diffusion-controlnet" / "log.csv").read_text() == log  # reloaded, not trained
    exported = load_model(root / "candidate")
    foundation = load_model(root / "foundation")
    scored = train_method("controlnet", foundation, load_recipe(foundation.config.preset, recipe),
                          unpack(root / "train.npz"), 2, 0, "cpu", root / "work", resume=True)
    mine, theirs = exported.state_dict(), scored.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    backbone, theirs = plain_state_dict(exported.backbone), plain_state_dict(foundation.backbone)
    assert backbone.keys() == theirs.keys() and all(torch.equal(backbone[k], theirs[k]) for k in backbone)
    sampling = exported.config.sampling
    assert (sampling.sampler, sampling.steps, sampling.start, sampling.guidance) == ("ddim", 20, 1.0, 1.5)
    assert not exported.anchored  # no blend towards z_c
    assert not exported.config.streams.adaptive  # the method's switches (ControlNet: no LoRA)
    assert "dev_ablations.py run" in exported.config.card["streams"]


def test_export_refuses_a_run_that_has_not_finished(tiny_setup, capsys):
    from dev_ablations import main

    root, recipe = tiny_setup
    assert main(_export_args(root, recipe, "candidate")) == 2
    assert "no finished 2-step training of controlnet" in capsys.readouterr().err
    assert not (root / "candidate").exists()


def test_paired_compares_two_rows_scan_by_scan_across_a_cohort_scored_in_parts(tmp_path, capsys):
    """``paired``: a candidate's row against another model's, the candidate's cohort scored as two folders; the
    lesion-level AUC only where both have one (no lesion: missing), and the tests as scipy computes them."""
    from scipy import stats

    from dev_ablations import main

    cand = [23.0, 24.0, 22.5, 21.0]
    base = [22.0, 23.5, 22.0, 21.5]
    cand_auc = [0.95, "nan", 0.97, 0.99]
    base_auc = [0.94, 0.90, 0.97, 0.98]
    for part, scans in (("a", (0, 1)), ("b", (2, 3))):
        (tmp_path / part).mkdir()
        _write_rows(tmp_path / part / "rows-candidate.tsv", (
            {"method": "candidate", "row": "ddim20x4-g1.5", "scan": f"sub-0{i + 1}", "psnr": cand[i],
             "lesion_auc": cand_auc[i]} for i in scans))
    (tmp_path / "shipped").mkdir()
    _write_rows(tmp_path / "shipped" / "rows-shipped.tsv", (
        {"method": "shipped", "row": "no-diffusion", "scan": f"sub-0{i + 1}", "psnr": base[i],
         "lesion_auc": base_auc[i]} for i in range(4)))
    a = f"candidate:ddim20x4-g1.5={tmp_path / 'a'},{tmp_path / 'b'}"
    assert main(["paired", "--a", a, "--b", f"shipped:no-diffusion={tmp_path / 'shipped'}"]) == 0
    psnr, auc = capsys.readouterr().out.strip().splitlines()
    t_p = stats.ttest_rel(cand, base).pvalue
    assert psnr.startswith("measure=psnr diff=+0.3750 above=3 equal=0 below=1 scans=4")
    assert f"t_p={t_p:.3g} " in psnr
    assert auc.startswith("measure=lesion_auc diff=+0.0067 above=2 equal=1 below=0 scans=3")
    # a row nobody scored, or one folder given twice (every scan twice), is refused in one line
    assert main(["paired", "--a", a, "--b", f"shipped:default={tmp_path / 'shipped'}"]) == 2
    assert "no 'default' rows of 'shipped'" in capsys.readouterr().err
    twice = f"candidate:ddim20x4-g1.5={tmp_path / 'a'},{tmp_path / 'a'}"
    assert main(["paired", "--a", twice, "--b", f"shipped:no-diffusion={tmp_path / 'shipped'}"]) == 2
    assert "a scan appears twice" in capsys.readouterr().err


def test_paired_adds_the_level_free_psnr_given_the_psr_scale(tmp_path, capsys):
    """A row that gains PSNR only by sitting nearer the true level gains nothing level-free."""
    from dev_ablations import main

    scale = 0.2
    mse_about_level = 10 ** (-24 / 10)  # on PSR / scale: 24 dB with no offset
    rows = []
    for i in range(3):
        for method, bias in (("shifted", 0.0), ("offset", 0.008)):
            psnr = -10 * np.log10(mse_about_level + (bias / scale) ** 2)
            rows.append({"method": method, "row": "r", "scan": f"sub-0{i + 1}", "psnr": psnr, "bias": bias,
                         "lesion_auc": 0.9})
    _write_rows(tmp_path / "rows-all.tsv", rows)
    a, b = f"shifted:r={tmp_path}", f"offset:r={tmp_path}"
    assert main(["paired", "--a", a, "--b", b]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # without the scale: PSNR and lesion AUC
    assert main(["paired", "--a", a, "--b", b, "--psr-scale", str(scale)]) == 0
    psnr, _, level_free = capsys.readouterr().out.strip().splitlines()
    gain = 10 * np.log10(1 + (0.008 / scale) ** 2 / mse_about_level)  # what the offset costs: 1.47 dB
    assert psnr.startswith(f"measure=psnr diff=+{gain:.4f} above=3")
    fields = dict(item.split("=") for item in level_free.split())
    assert fields["measure"] == "psnr_level_free" and abs(float(fields["diff"])) < 1e-4


def test_train_method_fine_tunes_the_backbone_on_the_recipes_schedule_when_asked(tiny_setup):
    import torch
    from dev_ablations import train_method, unpack

    from demist_bids.models.io import load_model
    from demist_bids.models.unet import plain_state_dict
    from demist_bids.training.recipes import load_recipe

    root, recipe_path = tiny_setup
    recipe_path.write_text(recipe_path.read_text().replace("[steps]", "terminal_snr = 1e-6\n[steps]"))
    foundation = load_model(root / "foundation")
    recipe = load_recipe(foundation.config.preset, recipe_path)
    volumes = unpack(root / "train.npz")
    before = {k: v.clone() for k, v in plain_state_dict(foundation.backbone).items()}
    frozen = train_method("demist", foundation, recipe, volumes, 1, 0, "cpu", root / "frozen")
    assert frozen.config.schedule.terminal_snr == 1e-6  # the recipe's schedule, on the foundation's backbone
    assert all(torch.equal(v, before[k]) for k, v in plain_state_dict(frozen.backbone).items())
    assert not (root / "frozen" / "backbone").exists()
    tuned = train_method("demist", foundation, recipe, volumes, 1, 0, "cpu", root / "tuned", backbone_steps=2)
    assert (root / "tuned" / "backbone").is_dir()  # the backbone stage ran, with its checkpoints
    assert not all(torch.equal(v, before[k]) for k, v in plain_state_dict(tuned.backbone).items())
    assert all(not p.requires_grad for p in tuned.backbone_parameters())  # frozen again for the streams
    again = train_method("demist", foundation, recipe, volumes, 1, 0, "cpu", root / "tuned", resume=True,
                         backbone_steps=2)
    tuned_state = plain_state_dict(tuned.backbone)
    assert all(torch.equal(v, tuned_state[k]) for k, v in plain_state_dict(again.backbone).items())
