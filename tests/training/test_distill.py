"""Progressive distillation: the loss's DDIM algebra, what a round changes, the stage hook, the format."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from demist_bids.inference.schedulers import training_scheduler
from demist_bids.inference.student import STUDENT_DIR, resolve_sampling, teacher_sha256
from demist_bids.models.config import ScheduleConfig
from demist_bids.models.demist import build_model
from demist_bids.models.io import load_model, save_model
from demist_bids.training.checkpoints import TerminationFlag
from demist_bids.training.distill import (DistillSettings, distill_exported_model, distillation_loss,
                                          progressive_distillation)
from demist_bids.training.distributed import DistributedContext
from demist_bids.training.patches import PatchSampler
from demist_bids.training.pipeline import selected_stages
from demist_bids.training.recipes import recipe
from demist_bids.training.stages import StageRun
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config
from tests.training.test_stages import _blob_volume


class _Oracle:
    """The exact noise of a one-point data distribution (z0 known): DDIM is then exact."""

    def __init__(self, z0, alphas_cumprod, bias=0.0):
        self.z0, self.abar, self.bias = z0, alphas_cumprod, bias

    def predict_noise(self, z_t, t, z_c):
        abar = self.abar[t].view(-1, 1, 1, 1, 1)
        return (z_t - abar.sqrt() * self.z0) / (1 - abar).sqrt() + self.bias

    sampler_noise = predict_noise


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_loss_is_zero_for_exact_noise_and_positive_otherwise(steps):
    abar = training_scheduler(ScheduleConfig()).alphas_cumprod.float()
    z0 = torch.randn(3, 2, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    exact = _Oracle(z0, abar)
    loss = distillation_loss(exact, exact, z0, z0, abar, steps, torch.Generator().manual_seed(1))
    assert float(loss) < 1e-6  # the grid, the half step and the clean end point are consistent
    wrong = _Oracle(z0, abar, bias=0.1)
    assert float(distillation_loss(wrong, exact, z0, z0, abar, steps, torch.Generator().manual_seed(1))) > 1e-4


def test_rounds_halve_to_the_student():
    assert DistillSettings(teacher_steps=64, student_steps=4).rounds() == [32, 16, 8, 4]
    assert DistillSettings(teacher_steps=12, student_steps=4).rounds() == [6, 4]
    with pytest.raises(ValueError):
        DistillSettings(teacher_steps=4, student_steps=4).rounds()


def test_distill_is_its_own_stage():
    assert selected_stages("distill") == {"distill"}
    assert "distill" not in selected_stages("all")


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def cohort():
    torch.manual_seed(0)
    teacher = build_model(tiny_config("full", psr_scale=0.2))
    pretend_pretrained(teacher)
    pretend_trained_streams(teacher)
    volumes = [_blob_volume("sub-01_ses-1", 0, (32, 32, 32)), _blob_volume("sub-02_ses-1", 1, (32, 32, 32))]
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.steps_per_epoch = [16, 16, 16], 2, 10
    return teacher, volumes, rec


def test_round_trains_only_streams_and_leaves_teacher_alone(cohort, tmp_path):
    teacher, volumes, rec = cohort
    before = _snapshot(teacher)
    config_before = teacher.config.to_dict()
    run = StageRun(PatchSampler(volumes, rec.patch_size, 0.2, seed=0), rec, tmp_path, 3, DistributedContext(),
                   TerminationFlag(), False, 0, torch.device("cpu"))
    student = progressive_distillation(teacher, run, DistillSettings(teacher_steps=8, student_steps=2))
    after = _snapshot(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert teacher.config.to_dict() == config_before
    assert student.config.sampling.distilled_steps == 2 and student.config.sampling.sampler == "ddim"
    stream_keys = {k for k in before if k.startswith(("semantic.", "controlnet.")) or "lora" in k}
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= stream_keys  # autoencoders and the frozen backbone are the teacher's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps-2", "steps-4"]
    assert all((tmp_path / d / "done.json").is_file() for d in ("steps-2", "steps-4"))


@pytest.mark.parametrize(("parametrization", "lr", "factor"), [("epsilon", 1e-4, 0.7), ("v_prediction", 1e-3, 0.8)])
def test_distillation_reduces_the_loss(cohort, parametrization, lr, factor):
    import dataclasses

    _, volumes, _ = cohort
    torch.manual_seed(0)
    config = tiny_config("full", psr_scale=0.2)
    config.schedule = dataclasses.replace(config.schedule, prediction_type=parametrization)
    teacher = build_model(config)
    pretend_pretrained(teacher)
    pretend_trained_streams(teacher)
    abar = training_scheduler(teacher.config.schedule).alphas_cumprod.float()
    batch = PatchSampler(volumes, [16, 16, 16], 0.2, seed=3).batch(0, 4, stream=0)
    with torch.no_grad():
        z0, z_c = teacher.encode_psr(batch["psr01"]), teacher.encode_condition(batch["cond"])
    student = build_model(teacher.config)
    student.load_state_dict(teacher.state_dict())
    student.freeze_backbone()
    optimizer = torch.optim.Adam(student.trainable_stream_parameters(), lr=lr)

    def loss():
        return distillation_loss(student, teacher, z0, z_c, abar, 2, torch.Generator().manual_seed(5))

    start = float(loss().detach())
    for _ in range(15):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < factor * start


def test_stage_writes_a_student_the_participant_level_uses(cohort, tmp_path):
    from demist_bids.inference.sampler import synthesize

    teacher, volumes, rec = cohort
    model_dir = save_model(teacher, tmp_path / "out" / "model")
    teacher_files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    trainer = SimpleNamespace(
        out_dir=tmp_path / "out", volumes=volumes, recipe=rec, seed=0, device=torch.device("cpu"),
        ctx=DistributedContext(), flag=TerminationFlag(),
        config=SimpleNamespace(train=SimpleNamespace(max_steps=2, resume=False)),
    )
    config = json.loads((model_dir / "config.json").read_text())
    config["card"]["external_validation"] = [{"cohort": "the teacher's test", "rows": []}]
    (model_dir / "config.json").write_text(json.dumps(config))
    teacher_files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    target = distill_exported_model(trainer)
    assert target == model_dir / STUDENT_DIR
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == teacher_files

    student = load_model(target)  # the same format: strict load of every component
    assert "external_validation" not in student.config.card  # the teacher's measurements stay the teacher's
    readme = (target / "README.md").read_text()
    assert "Distilled student: progressive distillation" in readme and teacher_sha256(model_dir)[:16] in readme
    card = student.config.card["distillation"]
    assert card["teacher_sha256"] == teacher_sha256(model_dir) and card["iterations"] == 2
    assert student.config.sampling.distilled_steps == 4  # the small preset's default

    # once there, the student is the default (issue 19); a scheduler name runs the teacher
    choice = resolve_sampling(model_dir)
    assert (choice.model_dir, choice.sampler, choice.steps, choice.label) == (target, "ddim", 4, "distilled")
    assert choice.guidance == 1.0 and student.config.sampling.guidance == 1.0  # guidance distilled in
    assert resolve_sampling(model_dir, steps=2).steps == 2
    teacher_choice = resolve_sampling(model_dir, "ddim")
    assert teacher_choice.model_dir == model_dir and not teacher_choice.student
    config = json.loads((model_dir / "config.json").read_text())
    config["sampling"].update(sampler="distilled", steps=4)
    (model_dir / "config.json").write_text(json.dumps(config))
    assert resolve_sampling(model_dir).model_dir == target
    assert resolve_sampling(model_dir, "ddim").steps == 50  # the teacher with DDIM, not at the student's count

    calls = []
    result = synthesize(student, volumes[0].cond, sampler=choice.sampler, steps=choice.steps,
                        progress=lambda done, total: calls.append(done))
    assert calls == [1, 2, 3, 4]
    assert result.mean.shape == volumes[0].cond.shape[1:] and np.isfinite(result.mean).all()


def test_distilled_without_student(tmp_path, cohort):
    teacher, _, _ = cohort
    model_dir = save_model(teacher, tmp_path / "model")
    with pytest.raises(FileNotFoundError):
        resolve_sampling(model_dir, "distilled")
    config = json.loads((model_dir / "config.json").read_text())
    config["sampling"].update(sampler="distilled", steps=4)
    (model_dir / "config.json").write_text(json.dumps(config))
    assert (resolve_sampling(model_dir).sampler, resolve_sampling(model_dir).steps) == ("ddim", 50)


def test_missing_model_is_reported(tmp_path, cohort):
    from demist_bids.exceptions import MissingInputError

    _, volumes, rec = cohort
    trainer = SimpleNamespace(out_dir=tmp_path, volumes=volumes, recipe=rec)
    with pytest.raises(MissingInputError):
        distill_exported_model(trainer)
    assert not Path(tmp_path / "model").exists()


def test_the_guided_blended_sampler_is_distilled_into_one_pass(cohort, tmp_path):
    """Issue 19: the student imitates its teacher's own sampler (guidance and blend towards z_c)
    and samples with one network pass per step, the blend kept."""
    from demist_bids.models.config import AnchorConfig

    _, volumes, rec = cohort
    torch.manual_seed(0)
    teacher = build_model(tiny_config("full", psr_scale=0.2))
    pretend_pretrained(teacher)
    pretend_trained_streams(teacher)
    channels = teacher.config.autoencoder.latent_channels
    teacher.config.anchor = AnchorConfig(timesteps=[0, 999], weights=[[0.3] * channels, [0.7] * channels])
    teacher.config.sampling.guidance, teacher.config.sampling.autoencoder_overlap = 2.0, 0.375
    abar = training_scheduler(teacher.config.schedule).alphas_cumprod.float()
    batch = PatchSampler(volumes, [16, 16, 16], 0.2, seed=3).batch(0, 2, stream=0)
    with torch.no_grad():
        z0, z_c = teacher.encode_psr(batch["psr01"]), teacher.encode_condition(batch["cond"])

    def loss(student, of):
        return float(distillation_loss(student, of, z0, z_c, abar, 2, torch.Generator().manual_seed(5)))

    unguided = copy.deepcopy(teacher)
    unguided.config.sampling.guidance = 1.0
    # the target is the guided teacher's sampler, not the same network without its guidance
    baseline = loss(unguided, unguided)
    assert abs(loss(unguided, teacher) - baseline) > 0.1 * baseline

    run = StageRun(PatchSampler(volumes, rec.patch_size, 0.2, seed=0), rec, tmp_path, 2, DistributedContext(),
                   TerminationFlag(), False, 0, torch.device("cpu"))
    student = progressive_distillation(teacher, run, DistillSettings(teacher_steps=4, student_steps=2))
    sampling = student.config.sampling
    assert (sampling.guidance, sampling.start, sampling.distilled_steps, sampling.steps) == (1.0, 1.0, 2, 2)
    assert sampling.autoencoder_overlap == 0.375  # the teacher's inference settings carry over
    assert student.config.anchor == teacher.config.anchor and student.anchored
    assert teacher.config.sampling.guidance == 2.0


def test_recipe_distill_table_sets_the_rounds(tmp_path):
    from demist_bids.training.distill import distill_settings
    from demist_bids.training.recipes import load_recipe

    assert distill_settings(recipe("small")).rounds() == [16, 8, 4]
    path = tmp_path / "recipe.toml"
    path.write_text("[distill]\nteacher_steps = 8\niterations = 30\n")
    settings = distill_settings(load_recipe("small", path))
    assert (settings.rounds(), settings.iterations, settings.student_steps) == ([4], 30, 4)
    path.write_text("[distill]\nteacher_step = 8\n")
    with pytest.raises(ValueError, match="teacher_step"):
        load_recipe("small", path)
