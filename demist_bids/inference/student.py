"""Where a distilled few-step student lives and when synthesis uses it.

A student (``demist BIDS OUT train --stage distill``) is a complete model
directory in the usual format, stored in the ``student/`` subdirectory of its
teacher, so the teacher's checksum (recorded in every sidecar) covers the
weights that made a map. The student's ``sampling.distilled_steps`` says it is
one and for how many DDIM steps. ``--sampler auto`` (the default) uses the
student whenever it is there, as issue 19 asks: distilling is an explicit step
(``train --stage distill``) and the student is the fast path it exists for;
``--sampler distilled`` insists on it, and any scheduler name (``--sampler ddim``)
runs the teacher instead. No torch here: the CLI resolves this cheaply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from demist_bids.models.config import ModelConfig
from demist_bids.utils.model_files import STUDENT_DIR, directory_sha256, student_dir

LOGGER = logging.getLogger("demist.inference")

__all__ = ["STUDENT_DIR", "DISTILLED", "SamplingChoice", "student_dir", "resolve_sampling", "teacher_sha256"]

DISTILLED = "distilled"
"""Sampler name meaning: the student, with DDIM at its distilled step count."""


@dataclass(frozen=True)
class SamplingChoice:
    """The model directory to load and how to sample it."""

    model_dir: Path
    sampler: str
    """A scheduler name of :func:`demist_bids.inference.schedulers.make_scheduler`."""
    steps: int
    student: bool = False
    """True when ``model_dir`` is a distilled student."""
    start: float = 1.0
    """Where the chain starts on the schedule (1: pure noise), from the loaded model's config."""
    guidance: float = 1.0
    """Classifier-free guidance scale, from the loaded model's config."""
    config: ModelConfig | None = field(default=None, compare=False)
    """The parsed configuration of ``model_dir`` (what the synthesis node builds), so it is
    not read again."""

    @property
    def label(self) -> str:
        """``distilled`` for a student, else the scheduler name (what sidecars record)."""
        return DISTILLED if self.student else self.sampler

    def describe(self) -> str:
        """One sentence for the boilerplate: what will actually run."""
        kind = "the model's distilled student (DDIM)" if self.student else self.sampler.upper()
        start = ("from pure noise" if self.start >= 1 else
                 f"from the aligned conditioning latent noised to {self.start:g} of the noise schedule")
        guidance = f", classifier-free guidance {self.guidance:g}" if self.guidance != 1 else ""
        anchor = ""
        if self.config is not None and self.config.anchor.weights:
            anchor = (", each clean-latent estimate blended towards the conditioning latent with weights "
                      "fitted per noise level on the training patches")
        return f"{kind}, {self.steps} steps {start}{guidance}{anchor}"


def _read_config(directory: Path) -> ModelConfig:
    from demist_bids.models.io import read_model_config

    return read_model_config(directory)


def resolve_sampling(model_dir: Path, sampler: str = "auto", steps: int = 0, *,
                     configs: Mapping[Path, ModelConfig] | None = None) -> SamplingChoice:
    """Turn ``--sampler``/``--steps`` and the model's recommendation into what to run.

    Args:
        model_dir: the (teacher) model directory given to the participant level.
        sampler: ``auto`` (the student when there is one, else the model's recommendation),
            ``distilled`` or a scheduler name.
        steps: 0 for the recommended/distilled count; otherwise overrides it.
        configs: the parsed configurations of the model and its student by directory
            (:attr:`demist_bids.models.validation.CheckedModel.configs`); without them
            each ``config.json`` is read here.

    Returns:
        The directory to load with its configuration, the scheduler and its step count.

    Raises:
        FileNotFoundError: ``distilled`` was asked for explicitly but there is no student.
    """
    model_dir = Path(model_dir)

    def read(directory: Path) -> ModelConfig:
        return configs[directory] if configs is not None else _read_config(directory)

    config = read(model_dir)
    explicit = sampler != "auto"
    own = {"start": float(config.sampling.start), "guidance": float(config.sampling.guidance),
           "config": config}
    if not explicit:
        sampler = DISTILLED if student_dir(model_dir) is not None else config.sampling.sampler
        if sampler != DISTILLED:
            steps = steps or int(config.sampling.steps)
    if sampler == DISTILLED:
        found = student_dir(model_dir)
        if found is not None:
            student = read(found)
            return SamplingChoice(found, "ddim", steps or int(student.sampling.distilled_steps), student=True,
                                  start=float(student.sampling.start), guidance=float(student.sampling.guidance),
                                  config=student)
        if explicit:
            raise FileNotFoundError(f"--sampler distilled: {model_dir} holds no {STUDENT_DIR}/ model")
        LOGGER.warning("%s recommends its distilled student, which is missing; using ddim:50", model_dir)
        return SamplingChoice(model_dir, "ddim", 50, **own)
    if not explicit:
        return SamplingChoice(model_dir, sampler, steps, **own)
    # a teacher recommending its student has no validated step count of its own
    default = 50 if config.sampling.sampler == DISTILLED else int(config.sampling.steps)
    return SamplingChoice(model_dir, sampler, steps or default, **own)


def teacher_sha256(model_dir: Path) -> str:
    """sha256 of a model directory's own files, leaving out its ``student/`` subdirectory."""
    return directory_sha256(model_dir, exclude=(STUDENT_DIR,))
