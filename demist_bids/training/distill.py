"""Progressive distillation of the conditioning streams into a few-step DDIM student.

Salimans & Ho 2022 (https://arxiv.org/abs/2202.00512): a student learns to do
in one deterministic DDIM step what its teacher does in two; the student then
teaches the next round, halving the step count each time (here
``teacher_steps`` -> ... -> ``student_steps``). Only the stream parameters are
optimised, exactly what the ``diffusion`` stage trains; the autoencoders and the
frozen backbone are the teacher's, and the teacher itself is never changed.

The teacher is imitated as its own sampler runs it (``DemistModel.sampler_noise``):
with its classifier-free guidance and its blend towards z_c. The student keeps the
blend weights but samples without guidance, so the guidance is distilled into its
streams as well (Meng et al. 2023, https://arxiv.org/abs/2210.03142): one network
pass per step instead of two.

Why progressive rather than consistency distillation: the student stays an
epsilon-prediction model sampled by the existing deterministic DDIM scheduler
at its step count, so the model format, the sampler and the participant level
need nothing new, and every round is checked against its own teacher on the
same noise grid. Consistency models need a skip/output parameterisation the
frozen epsilon backbone does not have, and their multistep sampling re-injects
noise, which costs accuracy on a regression-like target such as PSR.

The loss is the squared error of the latent the student's single DDIM step
lands on against the teacher's two steps. It equals Salimans & Ho's x-target
loss with weight ``(alpha'' - sigma'' alpha / sigma)^2``; their truncated-SNR
weight would multiply the first step by ~10^4 here (alpha-bar at t=999 is 1e-4).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from demist_bids.training.recipes import TrainingRecipe
from demist_bids.training.stages import StageRun, _optimizer_step, _to

LOGGER = logging.getLogger("demist.train")

__all__ = ["DistillSettings", "distill_settings", "distillation_loss", "progressive_distillation",
           "distill_exported_model"]


@dataclass
class DistillSettings:
    """How a student is distilled (the paper has no distillation; these are our choices)."""

    teacher_steps: int = 64
    """DDIM steps of the original model that the first round imitates."""
    student_steps: int = 4
    """DDIM steps of the final student; ``teacher_steps`` halved until it is reached."""
    iterations: int = 2000
    """Optimisation steps per halving round (``--max-steps`` caps them)."""
    learning_rate: float = 5e-5
    """Adam learning rate of the stream parameters."""

    def rounds(self) -> list[int]:
        """Student step counts, one per round (e.g. 32, 16, 8, 4)."""
        if self.student_steps < 1 or self.teacher_steps <= self.student_steps:
            raise ValueError("need 1 <= student_steps < teacher_steps")
        counts, steps = [], self.teacher_steps
        while steps > self.student_steps:
            steps = max(steps // 2, self.student_steps)
            counts.append(steps)
        return counts

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def distill_settings(recipe: TrainingRecipe) -> DistillSettings:
    """The recipe's ``distill`` table (per preset; a ``--train-recipe`` file can override it)."""
    table = recipe.distill
    return DistillSettings(teacher_steps=int(table["teacher_steps"]), student_steps=int(table["student_steps"]),
                           iterations=int(table["iterations"]), learning_rate=float(table["learning_rate"]))


TEACHER_MEASUREMENTS = ("sampler_benchmark", "external_validation", "development_sampler_grid", "stream_diagnostics")
"""Card entries that measured the teacher's own sampler: a student's card does not inherit them."""


def _alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(abar_t), sqrt(1 - abar_t) shaped B x 1 x 1 x 1 x 1; t < 0 is the clean sample (1, 0)."""
    abar = torch.where(t >= 0, alphas_cumprod[t.clamp(min=0)], torch.ones_like(alphas_cumprod[0]))
    abar = abar.view(-1, 1, 1, 1, 1)
    return abar.sqrt(), (1 - abar).clamp(min=0).sqrt()


def _ddim_move(z, eps, now, nxt):
    (a, s), (a_next, s_next) = now, nxt
    return a_next * (z - s * eps) / a + s_next * eps


def distillation_loss(
    student, teacher, z0: torch.Tensor, z_c: torch.Tensor, alphas_cumprod: torch.Tensor,
    steps: int, generator: torch.Generator,
) -> torch.Tensor:
    """One student DDIM step against two teacher DDIM steps from the same noisy latent.

    The student's grid is :class:`~demist_bids.inference.schedulers.DDIMSampler`'s
    trailing grid for ``steps`` (T-1, then every T/steps rounded), each step to the
    next grid point and the last one to the clean sample; the teacher stops half way.

    Both step with ``sampler_noise``: what their own samplers use (guidance, blend).

    Args:
        student: model being trained (its streams need gradients).
        teacher: frozen model of the previous round.
        z0: B x L x h x w x d clean scaled PSR latents.
        z_c: B x L x h x w x d conditioning latents.
        alphas_cumprod: T training alpha-bars, on the latents' device.
        steps: the student's step count.
        generator: CPU generator for the timesteps and noise.

    Returns:
        Scalar mean squared error between the two landing latents.
    """
    from demist_bids.inference.schedulers import trailing_timesteps

    grid = torch.cat([trailing_timesteps(alphas_cumprod.shape[0], steps), torch.tensor([-1])])
    k = torch.randint(0, steps, (z0.shape[0],), generator=generator)
    t, t_next = grid[k].to(z0.device), grid[k + 1].to(z0.device)
    t_mid = torch.div(t + t_next, 2, rounding_mode="floor")
    noise = torch.randn(z0.shape, generator=generator).to(z0.device)
    now = _alpha_sigma(alphas_cumprod, t)
    mid, nxt = _alpha_sigma(alphas_cumprod, t_mid), _alpha_sigma(alphas_cumprod, t_next)
    z_t = now[0] * z0 + now[1] * noise
    with torch.no_grad():
        z_mid = _ddim_move(z_t, teacher.sampler_noise(z_t, t, z_c), now, mid)
        target = _ddim_move(z_mid, teacher.sampler_noise(z_mid, t_mid.clamp(min=0), z_c), mid, nxt)
    landed = _ddim_move(z_t, student.sampler_noise(z_t, t, z_c), now, nxt)
    return torch.mean((landed - target) ** 2)


def _frozen(model):
    model = copy.deepcopy(model).eval()
    model.requires_grad_(False)
    return model


def _unguided_copy(model):
    """A trainable copy that samples with one pass per step (guidance 1), keeping the blend."""
    student = copy.deepcopy(model)
    student.config.sampling = dataclasses.replace(student.config.sampling, guidance=1.0)
    return student


def progressive_distillation(teacher, run: StageRun, settings: DistillSettings):
    """Distil ``teacher``'s streams into a ``settings.student_steps``-step DDIM student.

    Args:
        teacher: a trained model; left untouched (rounds work on copies).
        run: patches, recipe (batch size, gradient clip, checkpoint interval),
            directory (one ``steps-<n>`` stage per round), DDP context, seed, device.
        settings: step counts, iterations per round, learning rate.

    Returns:
        The student, in eval mode, its config saying it is distilled.
    """
    from demist_bids.inference.schedulers import training_scheduler
    from demist_bids.training.distributed import average_scalar
    from demist_bids.training.engine import Stage, run_stage, step_generator

    recipe, ctx = run.recipe, run.ctx
    alphas_cumprod = training_scheduler(teacher.config.schedule).alphas_cumprod.float().to(run.device)
    current = _frozen(teacher)
    for steps in settings.rounds():
        student = _unguided_copy(current)
        student.freeze_backbone()  # the streams (and only they) get gradients
        student.eval()  # no dropout or batch statistics anywhere: eval is the training behaviour
        params = student.trainable_stream_parameters()
        optimizer = torch.optim.Adam(params, lr=settings.learning_rate)
        name = f"distill-{steps}"

        def step(i: int, student=student, teacher=current, params=params, optimizer=optimizer,
                 steps=steps, name=name) -> dict:
            batch = _to(run.sampler.batch(i, recipe.batch_size, stream=5), run.device)
            with torch.no_grad():
                z0 = teacher.encode_psr(batch["psr01"])
                z_c = teacher.encode_condition(batch["cond"])
            loss = distillation_loss(student, teacher, z0, z_c, alphas_cumprod, steps,
                                     step_generator(run.seed, ctx.rank, name, i))
            _optimizer_step(ctx, params, optimizer, loss, recipe.grad_clip)
            return {"loss": average_scalar(ctx, float(loss.detach()))}

        stage = Stage(name, Path(run.directory) / f"steps-{steps}", run.steps, recipe.steps_per_epoch,
                      modules={"student": student}, optimizers={"streams": optimizer})
        LOGGER.info("distillation round: %d -> %d DDIM steps, %d iterations", 2 * steps, steps, run.steps)
        run_stage(stage, step, ctx=ctx, flag=run.flag, resume=run.resume)
        current = _frozen(student)
    student = current
    student.config.sampling = dataclasses.replace(
        teacher.config.sampling, sampler="ddim", steps=settings.student_steps, start=1.0, guidance=1.0,
        validated=False, distilled_steps=settings.student_steps)
    return student


def distill_exported_model(trainer) -> Path:
    """``train --stage distill``: distil ``OUTPUT_DIR/model`` into ``OUTPUT_DIR/model/student``.

    Args:
        trainer: the :class:`~demist_bids.training.pipeline.CohortTrainer` after
            loading its volumes (its config, recipe, DDP context, device, seed).

    Returns:
        The student's directory.
    """
    from demist_bids.exceptions import MissingInputError
    from demist_bids.inference.student import STUDENT_DIR, teacher_sha256
    from demist_bids.models.io import load_model, save_model
    from demist_bids.training.distributed import barrier
    from demist_bids.training.patches import PatchSampler
    from demist_bids.training.model_card import write_model_card
    from demist_bids.training.recipes import capped

    model_dir = Path(trainer.out_dir) / "model"
    if not (model_dir / "config.json").is_file():
        raise MissingInputError(f"{model_dir} is missing: train the model (diffusion stage) before distilling it")
    teacher = load_model(model_dir, device=str(trainer.device))
    settings = distill_settings(trainer.recipe)
    iterations = capped(settings.iterations, trainer.config.train.max_steps)
    sampler = PatchSampler(trainer.volumes, trainer.recipe.patch_size, teacher.config.psr_scale,
                           seed=trainer.seed + 5000, rank=trainer.ctx.rank)
    run = StageRun(sampler=sampler, recipe=trainer.recipe, directory=Path(trainer.out_dir) / "training" / "distill",
                   steps=iterations, ctx=trainer.ctx, flag=trainer.flag, resume=trainer.config.train.resume,
                   seed=trainer.seed, device=trainer.device)
    student = progressive_distillation(teacher, run, settings)
    target = model_dir / STUDENT_DIR
    if trainer.ctx.is_main:
        card = {k: v for k, v in teacher.config.card.items() if k not in TEACHER_MEASUREMENTS}
        card["distillation"] = {
            "method": "progressive distillation (Salimans & Ho 2022) of the conditioning streams, "
                      "the teacher's guidance distilled in (Meng et al. 2023)",
            "teacher_sha256": teacher_sha256(model_dir),
            "teacher_sampler": f"ddim:{settings.teacher_steps}",
            "teacher_guidance": float(teacher.config.sampling.guidance),
            "blend_towards_z_c": teacher.anchored,
            "rounds": settings.rounds(),
            **settings.to_dict(),
            "iterations": iterations,
            "batch_size": trainer.recipe.batch_size,
            "patch_size": list(trainer.recipe.patch_size),
        }
        student.config.card = card
        save_model(student, target)
        write_model_card(target)
        LOGGER.info("distilled %d-step student written to %s; the participant level uses it by default "
                    "(--sampler ddim runs the teacher); benchmarks/sampler_speed.py scores it against the "
                    "teacher's DDIM-50 and DDPM-1000", settings.student_steps, target)
    barrier(trainer.ctx)
    return target
