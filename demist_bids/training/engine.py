"""The loop every training stage shares: steps, epochs, checkpoints, resume, SIGTERM.

A stage is a step function plus the modules and optimizers it updates. The
engine runs the steps, writes a checkpoint every ``steps_per_epoch`` steps and
at the end, resumes from the checkpoint when asked, logs each step, and stops
cleanly on SIGTERM: all ranks agree to stop after the same step (one tiny
all-reduce per step), the main rank saves, and :class:`TrainingInterrupted`
propagates so the job exits for requeueing.

Randomness inside a step comes from :func:`step_generator`, seeded from
(seed, rank, stage, step): a resumed stage draws exactly what the killed one
would have, and ranks draw different noise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from demist_bids.training.checkpoints import (TerminationFlag, TrainingInterrupted,
                                              load_checkpoint, restore_rng_state, save_checkpoint)
from demist_bids.training.distributed import DistributedContext, barrier, broadcast_parameters
from demist_bids.training.progress import StageLog
from demist_bids.utils.atomic import atomic_write_text

LOGGER = logging.getLogger("demist.train")
DONE_NAME = "done.json"


def step_generator(seed: int, rank: int, stage: str, step: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator for one step, independent of every other (seed, rank, stage, step).

    A stage is known by the first 8 bytes of its name only, so every ``diffusion-<method>`` stage draws the same
    noise and timesteps for one seed: the Table-1 methods train on common draws and differ only in their
    streams and initial weights. Kept as it is: another hash would change every model's training draws."""
    stage_id = int.from_bytes(stage.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
    value = int(np.random.SeedSequence([seed, rank, stage_id, step]).generate_state(1, np.uint64)[0])
    generator = torch.Generator(device=device)
    generator.manual_seed(value % (2**63))
    return generator


@dataclass
class Stage:
    """One optimisation stage.

    Attributes:
        name: stage name (seeds its random draws; shown in logs).
        directory: where checkpoint.pt, log.csv and done.json go.
        total_steps: optimisation steps.
        steps_per_epoch: steps between checkpoints.
        modules: state to checkpoint and restore, by name.
        optimizers: optimizers to checkpoint and restore, by name.
        extra: JSON-able values stored in the checkpoint (e.g. scale factors).
    """

    name: str
    directory: Path
    total_steps: int
    steps_per_epoch: int
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def done_path(self) -> Path:
        return Path(self.directory) / DONE_NAME

    def is_done(self) -> bool:
        return self.done_path.exists()


def stage_state(directory: Path) -> dict | None:
    """The final (or latest) checkpoint of a stage directory."""
    return load_checkpoint(directory)


def _payload(stage: Stage, step: int) -> dict:
    return {
        "stage": stage.name,
        "step": step,
        "modules": {k: m.state_dict() for k, m in stage.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in stage.optimizers.items()},
        "extra": json.dumps(stage.extra),
    }


def _restore(stage: Stage, state: dict) -> int:
    for key, module in stage.modules.items():
        module.load_state_dict(state["modules"][key])
    for key, optimizer in stage.optimizers.items():
        if key in state["optimizers"]:
            optimizer.load_state_dict(state["optimizers"][key])
    stage.extra.update(json.loads(state.get("extra", "{}")))
    restore_rng_state(state["rng"])
    return int(state["step"])


def load_finished(stage: Stage) -> None:
    """Fill ``stage.modules`` from the stage's final checkpoint (used by later stages)."""
    state = load_checkpoint(stage.directory)
    if state is None or not stage.is_done():
        raise FileNotFoundError(f"stage {stage.name!r} has not finished in {stage.directory}")
    for key, module in stage.modules.items():
        module.load_state_dict(state["modules"][key])
    stage.extra.update(json.loads(state.get("extra", "{}")))


def weights_digest(modules: dict[str, nn.Module]) -> str:
    """sha256 over every parameter and buffer, in a fixed order (compares ranks)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(modules):
        for key, value in sorted(modules[name].state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _stop_requested(ctx: DistributedContext, flag: TerminationFlag) -> bool:
    if not ctx.enabled:
        return flag.requested
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag.requested else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def run_stage(
    stage: Stage,
    step_fn: Callable[[int], dict[str, float]],
    *,
    ctx: DistributedContext,
    flag: TerminationFlag,
    resume: bool,
    finalize: Callable[[], None] | None = None,
) -> None:
    """Run ``step_fn(step)`` for the stage's remaining steps.

    Args:
        step_fn: performs optimisation step ``step`` (0-based) and returns its losses.
        resume: continue from the stage's checkpoint; a finished stage is then
            only reloaded. Without it the stage starts from step 0.
        finalize: called once after the last step and before the final save
            (e.g. to compute scale factors into ``stage.extra``).

    Raises:
        TrainingInterrupted: SIGTERM arrived; a checkpoint was saved first.
    """
    directory = Path(stage.directory)
    start = 0
    if resume and stage.is_done():
        load_finished(stage)
        LOGGER.info("Stage %s already finished in %s; reusing it", stage.name, directory)
        return
    if resume:
        state = load_checkpoint(directory)
        if state is not None:
            start = _restore(stage, state)
            LOGGER.info("Resuming stage %s at step %d of %d", stage.name, start, stage.total_steps)
    elif ctx.is_main and stage.is_done():
        stage.done_path.unlink()
    barrier(ctx)
    for module in stage.modules.values():  # every rank starts from rank 0's weights
        broadcast_parameters(ctx, module)
    log = StageLog(directory / "log.csv" if ctx.is_main else None, stage.name, stage.total_steps, start)
    try:
        for step in range(start, stage.total_steps):
            losses = step_fn(step)
            log.step(step + 1, losses)
            epoch_end = (step + 1) % stage.steps_per_epoch == 0 and step + 1 < stage.total_steps
            if _stop_requested(ctx, flag):
                if ctx.is_main:
                    save_checkpoint(directory, _payload(stage, step + 1))
                barrier(ctx)
                raise TrainingInterrupted(
                    f"{flag.signal_name or 'a signal'} stopped stage {stage.name} after step {step + 1}; "
                    f"checkpoint saved in {directory}. Rerun with --resume to continue."
                )
            if epoch_end and ctx.is_main:
                save_checkpoint(directory, _payload(stage, step + 1))
    finally:
        log.close()
    if finalize is not None:
        finalize()
    if ctx.is_main:
        save_checkpoint(directory, _payload(stage, stage.total_steps))
        atomic_write_text(stage.done_path, json.dumps({"steps": stage.total_steps, **stage.extra}))
    if ctx.enabled:  # each rank records what it ends with: ranks must agree bit for bit
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / f"weights-rank{ctx.rank}.sha256", weights_digest(stage.modules) + "\n")
    barrier(ctx)
