"""Sampler settings against the truth on the development phantom: how the demo's sampler is chosen.

Usage::

    python benchmarks/sampler_grid.py [--model DIR] [--precision bf16] SPEC [SPEC ...]

A SPEC is ``steps:samples:guidance:start`` for DDIM (``20:4:1.5:1``: 20 steps
from pure noise, the mean of 4 samples, classifier-free guidance 1.5; ``2:1:1.5:0.15``:
2 steps from the conditioning latent noised to 0.15); ``nodiff`` decodes the
conditioning latent with no diffusion. Every spec runs on the same 64x80x64 box
of one fresh ``demist-phantom`` subject (seed 11 by default: the development
cohort of issue 16, never a test cohort) with the same seed, and prints PSNR and
SSIM inside the brain against the true PSR, the wall time, and for more than
one sample the Spearman correlation of the per-voxel std with the absolute error.
Choices made from its output are development choices; a test cohort scores them.
"""

from __future__ import annotations

import os

os.environ.setdefault("NIPYPE_NO_ET", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_speed import DEMO_MODEL, PHANTOM_CROP, _centre_box, phantom_subject  # noqa: E402


def parse_spec(spec: str) -> dict | None:
    """``steps:samples:guidance:start`` to keyword values; ``nodiff`` to None."""
    if spec == "nodiff":
        return None
    try:
        steps, samples, guidance, start = spec.split(":")
        return {"steps": int(steps), "samples": int(samples), "guidance": float(guidance), "start": float(start)}
    except ValueError:
        raise SystemExit(f"bad spec {spec!r}: expected steps:samples:guidance:start or nodiff") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("specs", nargs="+", help="steps:samples:guidance:start, or nodiff")
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--phantom-seed", type=int, default=11)
    parser.add_argument("--phantom-work", type=Path, default=None, help="cache of the phantom (default: temporary)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    specs = [(spec, parse_spec(spec)) for spec in args.specs]

    import torch
    from scipy.stats import spearmanr

    from demist_bids.evaluation.metrics import image_metrics
    from demist_bids.inference.sampler import decode_condition, synthesize
    from demist_bids.models.io import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cond, truth, brain = phantom_subject(args.phantom_work or Path(tmp), args.phantom_seed, 0.6)
    box = _centre_box(brain, PHANTOM_CROP)
    cond, truth, brain = cond[(slice(None), *box)], truth[box], brain[box]
    for spec, kwargs in specs:
        start = time.perf_counter()
        std = None
        if kwargs is None:
            mean = decode_condition(model, cond, device="cpu", precision=args.precision)
        else:
            model.config.sampling.guidance = kwargs.pop("guidance")
            result = synthesize(model, cond, sampler="ddim", seed=args.seed, precision=args.precision,
                                crop_to_content=False, **kwargs)
            mean, std = result.mean, result.std
        metrics = image_metrics(mean, truth, brain, data_range=model.config.psr_scale)
        line = f"{spec:<16} psnr_db={metrics['psnr']:.2f} ssim={metrics['ssim']:.3f} seconds={time.perf_counter() - start:.0f}"
        if std is not None:
            line += f" spearman_std_err={spearmanr(std[brain], np.abs(mean - truth)[brain]).correlation:.3f}"
        print(line, flush=True)  # noqa: T201 - benchmark output


if __name__ == "__main__":
    main()
