"""External validation: a trained model on a new cohort, against the baselines.

Cross-validation (the ``train`` level) answers "how well does the method
generalize within one cohort". This answers "how well does *this model file*
do on scans it never saw": the model is applied to every scan of a test cohort
that has a measured PSR map, the linear baseline is fitted on the model's own
training cohort, and every row is measured the same way (:mod:`.heldout`):
the rows of :mod:`.methods` (DEMIST with its default and the paper's sampler,
backbone only, no diffusion, the autoencoder ceiling, and the U-Net regressor
when ``--regressor`` names one). It is how the embedded demo model is checked
on a fresh phantom cohort::

    demist-evaluate --model MODEL_DIR \
        --train-bids TRAIN_BIDS --test-bids TEST_BIDS --out OUT_DIR [--work WORK] \
        [--regressor DIR [--train-regressor [--regressor-steps N]]] [--paper-samples K]

``--regressor DIR`` loads a saved regressor (a train run's
``training/fold-<k>/models/unet-regressor``); with ``--train-regressor`` one
is trained there first, when absent, on the training cohort with the model's
preset recipe (resumable). Writes ``OUT_DIR/evaluation*.tsv``,
``lesion_auc_pooled.tsv`` and ``evaluation.html`` (one "fold", 0) and prints
the per-method means as its last lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOGGER = logging.getLogger("demist.evaluation")


def preprocessed_volumes(bids_dir: Path, work_dir: Path, name: str):
    """Every scan of ``bids_dir`` with a PSR map, preprocessed (cached in ``work_dir / name``) and loaded."""
    from demist_bids.workflows.cohort import find_training_scans, preprocess_cohort
    from demist_bids.training.volumes import load_volume

    # ``train_preproc`` is where the train level caches its preprocessing: passing
    # the training run's work directory reuses it.
    scans = find_training_scans(bids_dir, work_dir=work_dir)
    paths = preprocess_cohort(scans, work_dir=work_dir / name)
    return [load_volume(p) for p in paths]


def train_regressor_on(volumes, model, directory: Path, *, seed: int = 0, resume: bool = True,
                       steps: int | None = None) -> Path:
    """Train the U-Net regressor on ``volumes`` with the model's preset recipe, saved in ``directory``.

    ``steps`` overrides the preset's step count (a model trained longer than its preset
    deserves a regressor with a matching budget).

    The patches are those the train level draws (same patch size, the model's
    PSR scale); the stage checkpoints in ``directory / "stage"`` and resumes.
    """
    import torch

    from demist_bids.training.checkpoints import TerminationFlag
    from demist_bids.training.distributed import DistributedContext
    from demist_bids.training.patches import PatchSampler
    from demist_bids.training.recipes import recipe
    from demist_bids.training.stages import StageRun, fit_regressor

    rec = recipe(model.config.preset)
    rec.patch_size = list(model.config.patch_size)
    sampler = PatchSampler(volumes, rec.patch_size, model.config.psr_scale, seed=seed)
    torch.manual_seed(seed)
    run = StageRun(sampler, rec, Path(directory) / "stage", steps or rec.steps["regressor"], DistributedContext(),
                   TerminationFlag(), resume, seed, torch.device("cpu"))
    return fit_regressor(run, model.config.psr_scale, Path(directory))


def evaluate_model(
    model_dir: Path, train_bids: Path, test_bids: Path, out_dir: Path, *, work_dir: Path,
    sampler: str | None = None, steps: int | None = None, seed: int = 0, test_cache: str = "test_preproc",
    regressor: Path | None = None, train_regressor: bool = False, regressor_steps: int | None = None,
    paper_samples: int | None = None,
):
    """Measure ``model_dir``, its reference rows and the baselines on ``test_bids``; return the per-scan table.

    ``test_cache`` names the test cohort's preprocessing cache in ``work_dir``: give
    each test cohort its own, or a second cohort would overwrite the first one's.
    ``regressor`` is a saved U-Net regressor; ``train_regressor`` trains it there
    first on ``train_bids`` when it is absent (``regressor_steps`` steps; default: the preset's).
    ``paper_samples``: samples the ``demist-paper`` row averages.
    """
    import pandas as pd

    from demist_bids.training.heldout import evaluate_fold
    from demist_bids.evaluation.linear_baseline import fit_linear_psr
    from demist_bids.training.methods import SamplerChoice, demist_rows
    from demist_bids.reports.evaluation import write_evaluation
    from demist_bids.models.io import load_model
    from demist_bids.models.regressor import is_saved_regressor
    from demist_bids.inference.student import DISTILLED, resolve_sampling

    model = load_model(model_dir)
    sampling = model.config.sampling
    student = None
    if sampler is None:  # as the participant level's --sampler auto: the student when there is one
        resolved = resolve_sampling(Path(model_dir))
        student = load_model(resolved.model_dir) if resolved.student else None
        if sampling.sampler == DISTILLED:  # the teacher's own row is what --sampler ddim runs
            teacher = resolve_sampling(Path(model_dir), "ddim")
            sampler, steps = teacher.sampler, steps or teacher.steps
    choice = SamplerChoice(sampler or sampling.sampler, steps or sampling.steps, sampling.start, 1,
                           sampling.precision)
    train = preprocessed_volumes(Path(train_bids), Path(work_dir), "train_preproc")
    test = preprocessed_volumes(Path(test_bids), Path(work_dir), test_cache)
    linear = fit_linear_psr((v.cond[0], v.cond[1], v.psr, v.brain) for v in train)
    if regressor is not None and train_regressor and not is_saved_regressor(regressor):
        train_regressor_on(train, model, Path(regressor), seed=seed, steps=regressor_steps)

    rows = demist_rows(model, choice, seed=seed, device="cpu", regressor_dir=regressor,
                      paper_samples=paper_samples, student=student)
    result = evaluate_fold(0, test, rows.synthesizers, linear, model.config.psr_scale, references=rows.references)
    per_scan = pd.DataFrame(result.rows)
    notes = (f"External validation of {Path(model_dir).name} on {Path(test_bids).name} "
             f"({len(test)} scans), seed {seed}; linear baseline fitted on {Path(train_bids).name}. "
             + " ".join(rows.notes))
    write_evaluation(per_scan, result.pooled_roc(), Path(out_dir), title="DEMIST external validation",
                     notes=notes, lesion_medians=result.pooled_lesion_medians())
    return per_scan
