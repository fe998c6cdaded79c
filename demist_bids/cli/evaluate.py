"""``demist-evaluate``: score a trained model on a test cohort beside every baseline.

The command line of :func:`demist_bids.training.external.evaluate_model` (the
external validation that checks the embedded demo model on a fresh phantom
cohort). Errors end the process with the participant level's exit codes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def build_parser():
    """The ``demist-evaluate`` command line (a usage error raises ``UsageError``, 64)."""
    from demist_bids.cli.parser import _Parser

    parser = _Parser(prog="demist-evaluate", description="External validation: a trained model on a new "
                     "cohort with measured PSR maps, against the baselines.")
    parser.add_argument("--model", type=Path, required=True, help="the model directory to score")
    parser.add_argument("--train-bids", type=Path, required=True,
                        help="the model's training cohort (the linear baseline and the regressor are fitted on it)")
    parser.add_argument("--test-bids", type=Path, required=True, help="the test cohort (BIDS, with *_PSRmap)")
    parser.add_argument("--out", type=Path, required=True, help="where the tables and evaluation.html go")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: OUT/work)")
    parser.add_argument("--sampler", default=None, help="the demist row's sampler (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="its steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-cache", default="test_preproc",
                        help="name of the test cohort's preprocessing cache in --work (one per cohort)")
    parser.add_argument("--regressor", type=Path, default=None,
                        help="a saved U-Net regressor (the unet-regressor row; absent: no such row)")
    parser.add_argument("--train-regressor", action="store_true",
                        help="train the --regressor on --train-bids first when it is not there")
    parser.add_argument("--regressor-steps", type=int, default=None,
                        help="steps of that training (default: the model preset's)")
    parser.add_argument("--paper-samples", type=int, default=None,
                        help="samples averaged by the demist-paper row (default: the default sampler's; 0: leave it out)")
    return parser


def run_evaluate(argv: list[str] | None = None) -> int:
    """Parse, score, print the per-method means (the command's last lines); return 0."""
    from demist_bids.exceptions import UsageError

    opts = build_parser().parse_args(argv)
    if opts.train_regressor and opts.regressor is None:
        raise UsageError("--train-regressor needs --regressor DIR (where to save it)")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from demist_bids.training.external import evaluate_model

    per_scan = evaluate_model(
        opts.model, opts.train_bids, opts.test_bids, opts.out,
        work_dir=opts.work or opts.out / "work", sampler=opts.sampler, steps=opts.steps, seed=opts.seed,
        test_cache=opts.test_cache, regressor=opts.regressor, train_regressor=opts.train_regressor,
        regressor_steps=opts.regressor_steps, paper_samples=opts.paper_samples,
    )
    columns = [c for c in ("psnr", "ssim", "mse", "auc_proximal", "auc_distal", "auc_combined",
                           "lesion_auc_proximal", "lesion_auc_distal", "lesion_auc_combined") if c in per_scan]
    means = per_scan.groupby("method")[columns].mean()
    print(means.to_string(float_format=lambda v: f"{v:.4f}"))  # noqa: T201 - command output
    return 0


def main(argv: list[str] | None = None) -> None:
    """``demist-evaluate`` console-script entry point."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    from demist_bids.cli.run import _guarded

    sys.exit(_guarded("demist-evaluate", lambda: run_evaluate(argv)))
