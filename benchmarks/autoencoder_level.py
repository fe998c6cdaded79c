"""Where the PSR autoencoder's level offset comes from: the autoencoder, or the windows it runs in.

Session 22 (issue 16) found the shipped autoencoders' own reconstruction of a
measured map, the ceiling of every row, about +0.01 PSR above the truth inside
the brain (benchmarks/README). The evaluation decodes whole scans in
Gaussian-blended windows of the training patch size (``reconstruct_psr``,
``SamplingConfig.autoencoder_overlap``); the autoencoder was trained on single
patches. This measures the mean signed error inside the brain (PSR units) both
ways, per scan of a packed cohort (``dev_ablations.py pack``):

- ``patches``: training-size patches drawn as the ``ae`` stage draws them
  (centred on a brain voxel; un-augmented), each encoded and decoded alone;
- ``<blend><o>``: the whole scan through ``reconstruct_psr`` with overlap ``o`` and
  window weights ``blend`` (``SamplingConfig.autoencoder_blend``; ``ENC/DEC``, e.g.
  ``gaussian/constant``, gives the decoder its own, ``SamplingConfig.decoder_blend``), with its
  RMSE beside::

    python benchmarks/autoencoder_level.py --model MODEL --volumes dev.npz [--scans K] \\
        [--patch-batches N] [--overlaps 0,0.5,0.75] [--blends gaussian,constant,gaussian/constant]

Last line (means over the scans; patches weighted by their brain voxels)::

    patch_bias=<PSR> window_bias_<blend>_<o>=<PSR> window_rmse_<blend>_<o>=<PSR> ... scans=<n>
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parent))

PATCH_BATCH = 4


def patch_bias(model, volume, batches: int, seed: int = 0) -> tuple[float, int]:
    """Mean signed error (PSR) inside the brain of ``batches`` x 4 training-size patches of one scan, and
    how many brain voxels it is over."""
    import torch

    from demist_bids.training.patches import PatchSampler

    sampler = PatchSampler([volume], model.config.patch_size, model.config.psr_scale, seed=seed)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(batches):
            batch = sampler.batch(i, PATCH_BATCH, stream=1, augment=False)
            psr01, brain = batch["psr01"], batch["brain"] > 0
            error = model.decode_psr(model.encode_psr(psr01)) - psr01
            total += float(error[brain].double().sum())
            count += int(brain.sum())
    return total / max(count, 1) * model.config.psr_scale, count


def window_error(model, volume, overlap: float, blend: str = "gaussian") -> tuple[float, float]:
    """Mean signed error and RMSE (PSR) inside the brain of the whole scan's reconstruction at ``overlap``
    with ``blend`` weights (``ENC/DEC``: the encoder's, then the decoder's)."""
    from demist_bids.inference.sampler import reconstruct_psr
    from demist_bids.training.heldout import brain_box

    box = brain_box(volume.brain)
    sampling = model.config.sampling
    encoders, _, decoder = blend.partition("/")
    kept = sampling.autoencoder_overlap, sampling.autoencoder_blend, sampling.decoder_blend
    sampling.autoencoder_overlap, sampling.autoencoder_blend, sampling.decoder_blend = overlap, encoders, decoder or None
    try:
        reconstruction = reconstruct_psr(model, np.ascontiguousarray(volume.psr[box]), precision="fp32")
    finally:
        sampling.autoencoder_overlap, sampling.autoencoder_blend, sampling.decoder_blend = kept
    error = (reconstruction - volume.psr[box])[volume.brain[box]].astype(np.float64)
    return float(error.mean()), float(np.sqrt(np.mean(error**2)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--volumes", required=True, type=Path, help="a cohort packed by dev_ablations.py pack")
    parser.add_argument("--scans", type=int, default=0, help="the first K scans (0: all)")
    parser.add_argument("--patch-batches", type=int, default=8, help=f"batches of {PATCH_BATCH} patches per scan")
    parser.add_argument("--overlaps", default="0,0.5,0.75")
    parser.add_argument("--blends", default="gaussian",
                        help="window weights, comma-separated: gaussian, constant, or ENC/DEC (gaussian/constant)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    overlaps = [float(o) for o in args.overlaps.split(",")]
    blends = args.blends.split(",")
    from demist_bids.models.config import WINDOW_BLENDS

    valid = {*WINDOW_BLENDS, *(f"{e}/{d}" for e in WINDOW_BLENDS for d in WINDOW_BLENDS)}
    if args.patch_batches < 1 or any(not 0 <= o < 1 for o in overlaps) or set(blends) - valid:
        print("autoencoder_level: --patch-batches must be >= 1, every overlap in [0, 1) and every blend gaussian, "
              "constant or ENC/DEC of the two", file=sys.stderr)
        return 2
    settings = [(b, o) for b in blends for o in overlaps]

    import torch

    from demist_bids.models.io import load_model
    from dev_ablations import unpack

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu").eval()
    volumes = unpack(args.volumes, args.scans or None)
    rows, weighted, voxels = [], 0.0, 0
    for volume in volumes:
        bias, count = patch_bias(model, volume, args.patch_batches)
        weighted, voxels = weighted + bias * count, voxels + count
        rows.append([window_error(model, volume, o, b) for b, o in settings])
        print(f"{volume.name} patches {bias:+.4f} " + " ".join(
            f"{b}{o:g} {e[0]:+.4f} (rmse {e[1]:.4f})" for (b, o), e in zip(settings, rows[-1])), flush=True)
    means = np.mean(rows, axis=0)
    print(f"patch_bias={weighted / max(voxels, 1):+.5f} " + " ".join(
        f"window_bias_{b}_{o:g}={m[0]:+.5f} window_rmse_{b}_{o:g}={m[1]:.5f}" for (b, o), m in zip(settings, means))
        + f" scans={len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
