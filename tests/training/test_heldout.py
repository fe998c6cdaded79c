"""Fold evaluation: every method measured on every held-out scan, measured-map AUCs beside them."""

import numpy as np

from demist_bids.evaluation.linear_baseline import LinearPSRModel
from demist_bids.evaluation.metrics import pooled_lesion_auc
from demist_bids.training.heldout import brain_box, evaluate_fold, pool_evaluations, synthesize_in_brain_box
from demist_bids.training.volumes import TrainingVolume


def _volume(name):
    shape = (30, 30, 30)
    brain = np.zeros(shape, bool)
    brain[5:25, 6:24, 5:25] = True
    wm = np.zeros(shape, bool)
    wm[8:22, 8:22, 8:22] = True
    lesion = np.zeros(shape, bool)
    lesion[9:12, 10:13, 10:13] = True
    psr = np.where(wm, 0.18, 0.07) * brain
    psr[lesion] = 0.09
    t1w = np.where(wm, 0.9, 0.6) * brain
    flair = np.where(lesion, 0.9, 0.5) * brain
    return TrainingVolume(name, np.stack([t1w, flair]).astype(np.float32), psr.astype(np.float32),
                          brain, lesion, wm, np.eye(4))


def test_box_crop_covers_brain_and_pastes_back():
    volume = _volume("a")
    box = brain_box(volume.brain, margin=2)
    assert [(s.start, s.stop) for s in box] == [(3, 27), (4, 26), (3, 27)]
    seen = []
    out = synthesize_in_brain_box(lambda c: seen.append(c.shape) or np.ones(c.shape[1:]), volume.cond, volume.brain)
    full_box = brain_box(volume.brain)
    assert seen[0] == (2, *[s.stop - s.start for s in full_box])
    assert out[volume.brain].all() and out.sum() == np.prod(seen[0][1:])


def test_evaluate_fold_rows_and_rocs():
    volumes = [_volume("sub-1"), _volume("sub-2")]
    oracle = lambda cond: volumes[0].psr  # noqa: E731 - perfect "synthesis"
    linear = LinearPSRModel(0.0, 0.2, 0.0)
    result = evaluate_fold(3, volumes, {"demist": oracle}, linear, 0.2)
    methods = [r["method"] for r in result.rows]
    assert methods.count("demist") == 2 and methods.count("linear") == 2 and methods.count("measured") == 2
    demist = next(r for r in result.rows if r["method"] == "demist")
    assert demist["psnr"] == float("inf") and demist["auc_combined"] == 1.0
    measured = next(r for r in result.rows if r["method"] == "measured")
    assert "psnr" not in measured and measured["auc_proximal"] == 1.0
    roc = result.pooled_roc()
    assert set(roc) == {"measured", "linear", "demist"} and roc["demist"][1].size == 2 * 27


def test_reference_methods_see_the_scan_and_lesion_level_aucs_are_recorded():
    volumes = [_volume("sub-1"), _volume("sub-2")]
    no_lesion = _volume("sub-3")
    no_lesion.lesion[:] = False
    seen = []

    def ceiling(volume):  # a reference method gets the whole held-out scan, measured map included
        seen.append(volume.name)
        return volume.psr

    flat = lambda cond: np.full(cond.shape[1:], 0.15, np.float32)  # noqa: E731 - no contrast at all
    linear = LinearPSRModel(0.0, 0.2, 0.0)
    result = evaluate_fold(0, [*volumes, no_lesion], {"flat": flat}, linear, 0.2, references={"ae-ceiling": ceiling})
    assert seen == ["sub-1", "sub-2", "sub-3"]
    rows = {(r["method"], r["bids_name"]): r for r in result.rows}
    ceiling_row = rows[("ae-ceiling", "sub-1")]
    assert ceiling_row["psnr"] == float("inf") and ceiling_row["lesion_auc_combined"] == 1.0
    assert ceiling_row["n_lesions"] == 1
    assert rows[("measured", "sub-1")]["lesion_auc_proximal"] == 1.0  # the measured map's own, beside
    assert rows[("flat", "sub-1")]["lesion_auc_combined"] == 0.5
    assert all(np.isnan(rows[(m, "sub-3")]["lesion_auc_combined"]) for m in ("measured", "flat", "ae-ceiling"))
    # pooled over scans and folds: one lesion per lesioned scan, two folds
    rows_all, roc, medians = pool_evaluations([result, None, result])
    assert len(rows_all) == 2 * len(result.rows) and set(roc) == {"measured", "linear", "flat", "ae-ceiling"}
    pooled = {r["method"]: r for r in pooled_lesion_auc(medians)}
    assert pooled["ae-ceiling"]["n_lesions"] == 4 and pooled["ae-ceiling"]["lesion_auc_combined"] == 1.0
    assert pooled["flat"]["lesion_auc_distal"] == 0.5


def test_demist_rows_one_row_per_distinct_sampler(tmp_path):
    from demist_bids.training.methods import PAPER_SAMPLER, SamplerChoice, demist_rows
    from demist_bids.models.demist import build_model
    from demist_bids.models.regressor import RegressorConfig, build_regressor, save_regressor
    from tests.models.tiny import tiny_config

    model = build_model(tiny_config(psr_scale=0.3))
    shipped = demist_rows(model, SamplerChoice("ddim", 2, 0.15), seed=0, device="cpu")
    assert set(shipped.synthesizers) == {"demist", "demist-paper", "backbone-only", "no-diffusion"}
    assert set(shipped.references) == {"ae-ceiling"}
    assert any("unet-regressor row is left out" in n for n in shipped.notes)
    assert any("noised to 0.15" in n for n in shipped.notes)
    four = demist_rows(model, SamplerChoice("ddim", 2, 0.15), seed=0, device="cpu", paper_samples=4)
    assert any("pure noise, mean of 4 samples" in n for n in four.notes)
    assert not any("mean of" in n for n in shipped.notes)
    none = demist_rows(model, SamplerChoice("ddim", 2, 0.15), seed=0, device="cpu", paper_samples=0)
    assert "demist-paper" not in none.synthesizers and any("left out" in n for n in none.notes)

    config = RegressorConfig(features=[8, 8, 16, 16, 32, 8], patch_size=[16, 16, 16], psr_scale=0.3)
    save_regressor(build_regressor(config), config, tmp_path / "reg")
    paper = demist_rows(model, PAPER_SAMPLER, seed=0, device="cpu", regressor_dir=tmp_path / "reg")
    assert "demist-paper" not in paper.synthesizers and "unet-regressor" in paper.synthesizers
    assert any("only one row" in n for n in paper.notes)
    cond = np.zeros((2, 20, 20, 20), np.float32)
    assert paper.synthesizers["unet-regressor"](cond).shape == (20, 20, 20)


def test_a_distilled_student_makes_the_demist_row_and_the_teacher_keeps_its_own(tmp_path):
    """Issue 19: with a student the participant level's default is the student, so the evaluation's
    demist row is the student's and demist-teacher is the teacher's own default sampler."""
    import copy

    from demist_bids.inference.sampler import synthesize
    from demist_bids.models.demist import build_model
    from demist_bids.training.methods import SamplerChoice, demist_rows
    from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

    import torch
    torch.manual_seed(0)
    model = build_model(tiny_config(psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    model.config.sampling.guidance = 1.5
    student = copy.deepcopy(model)
    student.config.sampling.guidance, student.config.sampling.distilled_steps = 1.0, 3
    with torch.no_grad():
        for p in student.controlnet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = demist_rows(model, SamplerChoice("ddim", 2, 1.0), seed=0, device="cpu", paper_samples=0,
                       student=student)
    assert {"demist", "demist-teacher", "backbone-only", "no-diffusion"} <= set(rows.synthesizers)
    assert any("distilled student" in n and "guidance 1.5" in n for n in rows.notes)
    cond = np.random.default_rng(0).random((2, 32, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(
        rows.synthesizers["demist"](cond),
        synthesize(student, cond, sampler="ddim", steps=3, start=1.0, seed=0).mean, atol=1e-6)
    np.testing.assert_allclose(
        rows.synthesizers["demist-teacher"](cond),
        synthesize(model, cond, sampler="ddim", steps=2, start=1.0, seed=0).mean, atol=1e-6)
    assert not np.allclose(rows.synthesizers["demist"](cond), rows.synthesizers["demist-teacher"](cond))
