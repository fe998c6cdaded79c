"""What issue 16's targets 1 and 2 can reach on a phantom cohort: a perfect sampler's PSNR and Spearman.

Usage::

    python benchmarks/uncertainty_ceiling.py          # the development cohort: seed 11, 6 subjects, scale 0.6
    python benchmarks/uncertainty_ceiling.py --seed S --subjects N --scale X [--bids DIR] [--samples 4] [--draws 32]
        [--data-range 0.2022] [--rows ROWS.tsv [--row no-diffusion] [--method M]]

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
spread is slightly wider than the true posterior's.

Target 1 asks the mean of up to 4 samples to come within 0.3 dB of decoding
z_c, a regressor. A sampler drawing from the posterior pays for its spread:
the mean of N draws has squared error ``E + V / N``, where ``V`` is the
posterior variance and ``E`` the squared error of the posterior mean (the
best any regressor can do). Per subject the script reports the PSNR (on
PSR / ``--data-range`` with a range of 1, as every Table-1 row) of one draw,
of the mean of ``--samples`` draws and of the posterior mean (the mean of
``--draws`` draws less their ``V / draws``), and ``V`` inside the brain. With
``--rows`` (a ``dev_ablations.py`` rows file scored on the same subjects) it
also gives the price of calibration beside that row's error: a sampler whose
mean is as good as the row about the anatomy and perfectly calibrated about
the hidden part would lie ``10 log10(1 + V / (N MSE_row))`` dB below the row.
The phantom is scored here on its own grid, the rows on the preprocessed
one, so this is an estimate, and with ``V`` a little wider than the true
posterior's (above) it errs on the large side. The last two lines are::

    perfect_psnr_1=<mean over subjects> perfect_psnr_<samples>=... perfect_psnr_posterior_mean=... hidden_var=<PSR^2> [calibration_cost_db=<mean over the rows' scans>]
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


def hidden_variance(maps: np.ndarray, brain: np.ndarray) -> float:
    """The posterior variance of the draws (unbiased, per voxel), averaged inside ``brain``, in PSR^2."""
    return float(maps.var(axis=0, ddof=1)[brain].mean())


def perfect_psnrs(maps: np.ndarray, truth: np.ndarray, brain: np.ndarray, *, samples: int,
                  data_range: float, hidden_var: float) -> dict[str, float]:
    """PSNR of one draw, of the mean of ``samples`` draws and of the posterior mean, against ``truth``.

    The posterior mean's squared error is the mean of all draws' less ``hidden_var / len(maps)`` (V, from
    :func:`hidden_variance` of the same draws), its own sampling share, so the three differ only by how
    much of the posterior variance each still carries.
    """
    def psnr(mse: float) -> float:
        return float(10 * np.log10(data_range**2 / mse))

    def mse(estimate: np.ndarray) -> float:
        return float(((estimate - truth)[brain].astype(np.float64) ** 2).mean())

    posterior = mse(maps.mean(axis=0)) - hidden_var / len(maps)
    return {"1": psnr(mse(maps[0])), str(samples): psnr(mse(maps[:samples].mean(axis=0))),
            "posterior_mean": psnr(posterior)}


def calibration_cost_db(row_psnr: float, hidden_var: float, *, samples: int, data_range: float) -> float:
    """How far below a row a sampler would lie that matches its anatomy error and draws the hidden part.

    The row's squared error (PSR^2) is ``data_range^2 10^(-PSNR/10)``; the sampler's mean of ``samples``
    draws adds ``hidden_var / samples`` to it.
    """
    mse = data_range**2 * 10 ** (-row_psnr / 10)
    return float(10 * np.log10(1 + hidden_var / (samples * mse)))


def row_psnrs(path: Path, row: str, method: str | None = None) -> dict[str, float]:
    """Per scan label (``01``), the PSNR of ``row`` in a ``dev_ablations.py`` rows file.

    Raises ``ValueError`` when a scan has two different scores (several methods' rows; pass ``method``).
    """
    scores: dict[str, float] = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) > 3 and fields[1] == row and method in (None, fields[0]):
            label, value = fields[2].removeprefix("sub-"), float(fields[3])
            if scores.get(label, value) != value:
                raise ValueError(f"sub-{label} has several {row!r} rows; name the method with --method")
            scores[label] = value
    return scores


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
    parser.add_argument("--data-range", type=float, default=0.20220258831977844,
                        help="the PSNR's range in PSR (the demo model's psr_scale, as the Table-1 rows)")
    parser.add_argument("--rows", type=Path, help="a dev_ablations.py rows file scored on these subjects")
    parser.add_argument("--row", default="no-diffusion", help="the row of --rows to price calibration against")
    parser.add_argument("--method", help="the method of --rows whose row to read (when it holds several)")
    args = parser.parse_args(argv)
    if not 2 <= args.samples <= args.draws:
        parser.error("need 2 <= --samples <= --draws")
    if not args.data_range > 0:
        parser.error("--data-range must be positive")
    reference = None
    if args.rows is not None:
        if not args.rows.is_file():
            parser.error(f"--rows {args.rows}: no such file")
        try:
            reference = row_psnrs(args.rows, args.row, args.method)
        except ValueError as error:
            parser.error(f"--rows {args.rows}: {error}")
        if not reference:
            parser.error(f"--rows {args.rows} has no row {args.row!r}"
                         + (f" of method {args.method!r}" if args.method else ""))

    from demist_bids.phantom.cohort import plan_participants
    from demist_bids.phantom.template import canonical_head

    participants = plan_participants(args.subjects, args.seed, args.control_fraction)
    if reference is not None and not any(p.label in reference for p in participants):
        print(f"--rows {args.rows}: none of its scans is a subject of this cohort", file=sys.stderr)
        return 2
    head = canonical_head()
    few, many, psnrs, variances, costs = [], [], [], [], []
    for participant in participants:
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
        variances.append(hidden_variance(maps, brain))
        psnrs.append(perfect_psnrs(maps, truth, brain, samples=args.samples, data_range=args.data_range,
                                   hidden_var=variances[-1]))
        line = (f"sub-{participant.label}\t{participant.group}\tspearman_{args.samples}={few[-1]:.3f}\t"
                f"spearman_{args.draws}={many[-1]:.3f}\tmean_std={std.mean():.4f}\t"
                + "\t".join(f"psnr_{k}={v:.2f}" for k, v in psnrs[-1].items())
                + f"\thidden_var={variances[-1]:.3g}")
        if reference is not None and participant.label in reference:
            costs.append(calibration_cost_db(reference[participant.label], variances[-1], samples=args.samples,
                                             data_range=args.data_range))
            line += f"\t{args.row}_psnr={reference[participant.label]:.2f}\tcalibration_cost_db={costs[-1]:.3f}"
        print(line, flush=True)
    summary = " ".join(f"perfect_psnr_{k}={np.mean([p[k] for p in psnrs]):.2f}" for k in psnrs[0])
    summary += f" hidden_var={np.mean(variances):.3g}"
    if reference is not None:
        summary += f" calibration_cost_db={np.mean(costs):.3f} scans={len(costs)}"
    print(summary)
    print(f"perfect_spearman={np.mean(few):.3f} perfect_spearman_limit={np.mean(many):.3f} target={TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
