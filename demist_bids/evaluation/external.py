"""External validation: a trained model on a new cohort, against the linear baseline.

Cross-validation (the ``train`` level) answers "how well does the method
generalize within one cohort". This answers "how well does *this model file*
do on scans it never saw": the model is applied to every scan of a test cohort
that has a measured PSR map, the linear baseline is fitted on the model's own
training cohort, and both are measured the same way (:mod:`.crossval`). It is
how the embedded demo model is checked on a fresh phantom cohort::

    python -m demist_bids.evaluation.external --model MODEL_DIR \
        --train-bids TRAIN_BIDS --test-bids TEST_BIDS --out OUT_DIR [--work WORK]

Writes ``OUT_DIR/evaluation*.tsv`` and ``evaluation.html`` (one "fold", 0)
and prints the per-method means as its last lines.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

LOGGER = logging.getLogger("demist.evaluation")


def preprocessed_volumes(bids_dir: Path, work_dir: Path, name: str):
    """Every scan of ``bids_dir`` with a PSR map, preprocessed (cached in ``work_dir / name``) and loaded."""
    from demist_bids.training.cohort import find_training_scans, preprocess_cohort
    from demist_bids.training.volumes import load_volume

    # ``train_preproc`` is where the train level caches its preprocessing: passing
    # the training run's work directory reuses it.
    scans = find_training_scans(bids_dir, work_dir=work_dir)
    paths = preprocess_cohort(scans, work_dir=work_dir / name)
    return [load_volume(p) for p in paths]


def evaluate_model(
    model_dir: Path, train_bids: Path, test_bids: Path, out_dir: Path, *, work_dir: Path,
    sampler: str | None = None, steps: int | None = None, seed: int = 0, test_cache: str = "test_preproc",
):
    """Measure ``model_dir`` and the linear baseline on ``test_bids``; return the per-scan table.

    ``test_cache`` names the test cohort's preprocessing cache in ``work_dir``: give
    each test cohort its own, or a second cohort would overwrite the first one's.
    """
    import pandas as pd

    from demist_bids.evaluation.crossval import evaluate_fold
    from demist_bids.evaluation.linear_baseline import fit_linear_psr
    from demist_bids.evaluation.report import write_evaluation
    from demist_bids.inference.sampler import synthesize
    from demist_bids.models.io import load_model

    model = load_model(model_dir)
    sampler = sampler or model.config.sampling.sampler
    steps = steps or model.config.sampling.steps
    train = preprocessed_volumes(Path(train_bids), Path(work_dir), "train_preproc")
    test = preprocessed_volumes(Path(test_bids), Path(work_dir), test_cache)
    linear = fit_linear_psr((v.cond[0], v.cond[1], v.psr, v.brain) for v in train)

    def demist(cond):
        return synthesize(model, cond, sampler=sampler, steps=steps, seed=seed, device="cpu").mean

    result = evaluate_fold(0, test, {"demist": demist}, linear, model.config.psr_scale)
    per_scan = pd.DataFrame(result.rows)
    notes = (f"<p>External validation of {Path(model_dir).name} on {Path(test_bids).name} "
             f"({len(test)} scans); sampler {sampler}, {steps} steps, seed {seed}; linear baseline "
             f"fitted on {Path(train_bids).name}.</p>")
    write_evaluation(per_scan, result.pooled_roc(), Path(out_dir), title="DEMIST external validation",
                     notes=notes)
    return per_scan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train-bids", type=Path, required=True)
    parser.add_argument("--test-bids", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-cache", default="test_preproc",
                        help="name of the test cohort's preprocessing cache in --work (one per cohort)")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    per_scan = evaluate_model(
        opts.model, opts.train_bids, opts.test_bids, opts.out,
        work_dir=opts.work or opts.out / "work", sampler=opts.sampler, steps=opts.steps, seed=opts.seed,
        test_cache=opts.test_cache,
    )
    columns = [c for c in ("psnr", "ssim", "mse", "auc_proximal", "auc_distal", "auc_combined") if c in per_scan]
    means = per_scan.groupby("method")[columns].mean()
    print(means.to_string(float_format=lambda v: f"{v:.4f}"))  # noqa: T201 - command output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
