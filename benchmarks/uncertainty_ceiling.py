"""What issue 16's target 2 can reach on a phantom cohort: a perfect sampler's Spearman.

Usage::

    python benchmarks/uncertainty_ceiling.py          # the development cohort: seed 11, 6 subjects, scale 0.6
    python benchmarks/uncertainty_ceiling.py --seed S --subjects N --scale X [--bids DIR] [--samples 4] [--draws 32]

Target 2 asks that the per-voxel std of 4 samples correlate with the absolute
error of their mean inside the brain (Spearman >= 0.4). Part of every
phantom PSR map is hidden from the T1w and FLAIR by construction
(:mod:`demist_bids.phantom.psr`): the subject's WM and GM PSR levels, the
smooth myelin field and the measurement noise. This benchmark rebuilds each
subject of a single-session ``demist-phantom`` cohort from its seed and scores a *perfect*
sampler: it knows the anatomy (tissue fractions, lesions) exactly and draws
only the hidden state from its true prior, so its samples are draws of the
measured PSR given the anatomy. Per subject: the Spearman correlation of the
std of ``--samples`` draws with the absolute error of their mean (what target
2 measures for demist), and the same for ``--draws`` draws (the limit of many
samples). With ``--bids`` the rebuilt truth is first checked against that
dataset's PSR maps (exit 2 if they differ: other generation arguments).

This is a reference, not an upper bound for every model: the perfect sampler
has no anatomy error, while a real model's error and a calibrated model's
spread both also sit where it misjudges tissue boundaries or lesions. The T1w
carries 40 % of the myelin field, which this sampler does not use, so its
spread is slightly wider than the true posterior's. The last line is::

    perfect_spearman=<mean over subjects, --samples draws> perfect_spearman_limit=<mean, --draws draws> target=0.4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TARGET = 0.4


def posterior_draws(head, participant, *, seed: int, scale: float, draws: int):
    """The subject's anatomy, true (measured) PSR map, and ``draws`` PSR maps from the hidden state's prior."""
    from demist_bids.phantom.anatomy import subject_anatomy
    from demist_bids.phantom.cohort import STREAM_HEAD, STREAM_SESSION, subject_state, subject_stream
    from demist_bids.phantom.psr import draw_myelin, measured_psr

    state = subject_state(head, participant, seed=seed, sessions=1, scale=scale)
    anatomy = subject_anatomy(head, state.warp, state.history[0], subject_stream(seed, participant, STREAM_HEAD),
                              scale=scale)
    truth = measured_psr(anatomy, state.myelin, subject_stream(seed, participant, STREAM_SESSION + 1))
    maps = []
    for k in range(draws):
        # streams of their own, disjoint from the cohort's (those start with the cohort seed)
        rng = np.random.default_rng([2**32 - 1, seed, participant.index, k])
        myelin = draw_myelin(state.warp.shape, rng, patient=participant.group == "MS",
                             lesion_load=state.lesion_load_ml)
        maps.append(measured_psr(anatomy, myelin, rng))
    return anatomy, truth, np.stack(maps)


def spread_spearman(maps: np.ndarray, truth: np.ndarray, brain: np.ndarray) -> float:
    """Spearman of the per-voxel std of ``maps`` with the absolute error of their mean, inside ``brain``."""
    from scipy.stats import spearmanr

    std = maps.std(axis=0, ddof=1)[brain]
    error = np.abs(maps.mean(axis=0) - truth)[brain]
    return float(spearmanr(std, error).statistic)


def stored_psr(bids: Path, label: str) -> np.ndarray:
    import nibabel as nib

    path = bids / "derivatives" / "qmt" / f"sub-{label}" / "anat" / f"sub-{label}_PSRmap.nii.gz"
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--scale", type=float, default=0.6)
    parser.add_argument("--control-fraction", type=float, default=0.3)
    parser.add_argument("--bids", type=Path, help="the generated cohort: check the rebuilt truth against it")
    parser.add_argument("--samples", type=int, default=4, help="draws per subject, as target 2 samples demist")
    parser.add_argument("--draws", type=int, default=32, help="draws per subject for the many-sample limit")
    args = parser.parse_args(argv)
    if not 2 <= args.samples <= args.draws:
        parser.error("need 2 <= --samples <= --draws")

    from demist_bids.phantom.cohort import plan_participants
    from demist_bids.phantom.template import canonical_head

    head = canonical_head()
    few, many = [], []
    for participant in plan_participants(args.subjects, args.seed, args.control_fraction):
        anatomy, truth, maps = posterior_draws(head, participant, seed=args.seed, scale=args.scale, draws=args.draws)
        if args.bids is not None:
            stored = stored_psr(args.bids, participant.label)
            if stored.shape != truth.shape or not np.allclose(stored, truth, atol=1e-6):
                print(f"sub-{participant.label}: the rebuilt PSR map differs from {args.bids}; pass the seed, "
                      "subjects, scale and control fraction it was generated with", file=sys.stderr)
                return 2
        brain = anatomy.brain_mask
        few.append(spread_spearman(maps[: args.samples], truth, brain))
        many.append(spread_spearman(maps, truth, brain))
        std = maps.std(axis=0, ddof=1)[brain]
        print(f"sub-{participant.label}\t{participant.group}\tspearman_{args.samples}={few[-1]:.3f}\t"
              f"spearman_{args.draws}={many[-1]:.3f}\tmean_std={std.mean():.4f}", flush=True)
    print(f"perfect_spearman={np.mean(few):.3f} perfect_spearman_limit={np.mean(many):.3f} target={TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
