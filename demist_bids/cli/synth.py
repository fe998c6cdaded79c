"""``demist-synth T1W FLAIR OUT_PREFIX``: one pair of images, no BIDS dataset (as ``mri_synthsr``).

Runs :func:`demist_bids.api.synthesize_pair` and writes ``OUT_PREFIX_PSRmap.nii.gz``
with its ``.json`` sidecar, ``OUT_PREFIX_mask.nii.gz`` and, with ``--samples``
above 1, ``OUT_PREFIX_std.nii.gz``, all at once. Its errors end the process in
:func:`demist_bids.cli.run.main_synth` with the participant level's exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from demist_bids.exceptions import OutputNotWritableError, UsageError

LOGGER = logging.getLogger("demist.synth")


def build_parser() -> argparse.ArgumentParser:
    """The ``demist-synth`` command line (a usage error raises :class:`UsageError`, 64)."""
    from demist_bids.cli.parser import _Parser, device_name
    from demist_bids.config import SeedsConfig, SynthesisConfig

    defaults = SynthesisConfig()
    parser = _Parser(prog="demist-synth", description="Synthesize a PSR map from one T1w and "
                     "FLAIR pair, without a BIDS dataset (exit codes as the participant level).")
    parser.add_argument("t1w", type=Path, metavar="T1W", help="T1-weighted image (NIfTI)")
    parser.add_argument("flair", type=Path, metavar="FLAIR", help="FLAIR of the same session")
    parser.add_argument("out_prefix", type=Path, metavar="OUT_PREFIX",
                        help="output path prefix: OUT_PREFIX_PSRmap.nii.gz, ...")
    parser.add_argument("--model", type=Path, metavar="MODEL_DIR",
                        help="demist model directory (default: the embedded demo model)")
    parser.add_argument("--samples", type=int, default=defaults.samples,
                        help="samples to draw (>1 also writes the standard deviation)")
    parser.add_argument("--seed", type=int, default=SeedsConfig().master, help="random seed")
    parser.add_argument("--sampler", default=defaults.sampler,
                        help="auto (the model's), ddpm, ddim, dpm++ or distilled")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="sampling steps (0: the model's default)")
    parser.add_argument("--device", type=device_name, metavar="{auto,cpu,cuda,cuda:N}", default=defaults.device)
    parser.add_argument("--brain-mask", type=Path, help="a brain mask from another pipeline")
    parser.add_argument("-w", "--work-dir", type=Path,
                        help="keep the work folder here (reruns reuse it; default: temporary)")
    parser.add_argument("--omp-nthreads", type=int, default=1, help="threads per step")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def _check_output(prefix: Path) -> None:
    """Refuse an output prefix that cannot be written, before any work and creating nothing (73)."""
    if not prefix.name or prefix.name in (".", "..") or prefix.is_dir():
        raise UsageError(f"OUT_PREFIX {prefix} must name files, not a directory")
    folder = prefix.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise OutputNotWritableError(
            f"cannot write {prefix}_*: {folder} is not a writable directory")


def run_synth(args: argparse.Namespace) -> int:
    """Synthesize and write the files; return 0 (errors are raised with their exit codes)."""
    from demist_bids.api import synthesize_pair

    if args.samples < 1:
        raise UsageError(f"--samples must be at least 1, not {args.samples}")
    prefix = Path(args.out_prefix).absolute()
    _check_output(prefix)
    result = synthesize_pair(
        args.t1w, args.flair, model=args.model, samples=args.samples, device=args.device,
        seed=args.seed, sampler=args.sampler, steps=args.steps, brain_mask=args.brain_mask,
        work_dir=args.work_dir, omp_nthreads=args.omp_nthreads,
    )
    try:
        written = result.save(prefix)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot write {prefix}_*: {exc}") from exc
    for path in written:
        LOGGER.info("wrote %s", path)
    return 0
