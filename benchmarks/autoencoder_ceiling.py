"""How much of a measured PSR map a latent of a given size can hold.

Whatever the PSR autoencoder cannot reconstruct from its own latent, no
diffusion model working in that latent can synthesize: the autoencoder's own
reconstruction is a ceiling on the whole model. For each ``--size``
(``CHANNELS:LATENT_CHANNELS``, e.g. ``16,32,32:8`` for a 4x latent with 8
channels, ``16,32:4`` for 2x with 4) this trains a PSR autoencoder alone on a
training cohort's measured maps (the ``ae`` stage's L1 + KL + Sobel edge
losses, without the adversarial term; same patches, seed and steps for every
size), reconstructs every measured map of a test cohort through its latent and
scores it the way the evaluation scores a synthesis (PSNR, SSIM, lesion-vs-NAWM
AUC inside the brain), beside the voxel-wise linear baseline fitted on the
training cohort::

    python benchmarks/autoencoder_ceiling.py --train-bids TRAIN --test-bids TEST \
        --work WORK --size 16,32,32:8 --size 16,32:4 --steps 800

Prints one row per size (means over the test scans) and, last, one line of
``size=psnr/ssim/auc`` entries.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall a shared CPU


def parse_size(text: str) -> tuple[list[int], int]:
    """``16,32:4`` -> ([16, 32], 4)."""
    channels, _, latent = text.partition(":")
    return [int(c) for c in channels.split(",")], int(latent or 8)


def train_psr_autoencoder(train_volumes, channels, latent_channels, *, steps, psr_scale, seed=0,
                          patch=32, batch=2, lr=1e-3):
    """A PSR autoencoder of the small preset's kind, trained alone on measured PSR patches."""
    import torch

    from demist_bids.models.autoencoders import build_autoencoder
    from demist_bids.models.config import AutoencoderConfig
    from demist_bids.training import losses
    from demist_bids.training.patches import PatchSampler
    from demist_bids.training.stages import cosine_learning_rate, narrow_posterior

    torch.manual_seed(seed)
    config = AutoencoderConfig(channels=channels, num_res_blocks=1, norm_num_groups=8,
                               latent_channels=latent_channels)
    autoencoder = build_autoencoder(config, in_channels=1)
    narrow_posterior(autoencoder)
    sampler = PatchSampler(train_volumes, [patch] * 3, psr_scale, seed=seed)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    autoencoder.train()
    for i in range(steps):
        cosine_learning_rate([optimizer], lr, i, steps)
        image = sampler.batch(i, batch, stream=1)["psr01"]
        recon, z_mu, z_sigma = autoencoder(image)
        loss = losses.autoencoder_loss(recon, image, z_mu, z_sigma, kl_weight=1e-6, edge_weight=1.0,
                                       adversarial_weight=0.0, fake_logits=None)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return autoencoder.eval()


def reconstruct(autoencoder, volume, psr_scale, downsampling):
    """The measured map of ``volume`` through the autoencoder's latent (posterior mean), PSR units."""
    import numpy as np
    import torch

    from demist_bids.training.heldout import brain_box
    from demist_bids.inference.grid import crop_to_original, pad_to_multiple
    from demist_bids.models.autoencoders import posterior_mean

    box = brain_box(volume.brain)
    image = (volume.psr[box] / psr_scale)[None].astype(np.float32)
    padded, crop = pad_to_multiple(image, downsampling)
    with torch.no_grad():
        decoded = autoencoder.decode(posterior_mean(autoencoder, torch.from_numpy(padded)[None]))
    out = np.zeros(volume.psr.shape, np.float32)
    out[box] = crop_to_original(decoded[0].clamp(0, 1).numpy(), crop)[0] * psr_scale
    return np.where(volume.brain, out, 0.0).astype(np.float32)


def ceilings(train_volumes, test_volumes, sizes, *, steps, seed=0):
    """Mean PSNR/SSIM/lesion AUC over ``test_volumes``: ``{"linear": ..., size: ...}``."""
    import numpy as np

    from demist_bids.training.heldout import measure_prediction
    from demist_bids.evaluation.linear_baseline import fit_linear_psr
    from demist_bids.training.volumes import cohort_psr_scale

    psr_scale = cohort_psr_scale(train_volumes)
    linear = fit_linear_psr((v.cond[0], v.cond[1], v.psr, v.brain) for v in train_volumes)
    predictions = {"linear": lambda v: linear.predict(v.cond[0], v.cond[1], v.brain)}
    for size in sizes:
        channels, latent = parse_size(size)
        ae = train_psr_autoencoder(train_volumes, channels, latent, steps=steps, psr_scale=psr_scale, seed=seed)
        predictions[size] = lambda v, ae=ae, f=2 ** (len(channels) - 1): reconstruct(ae, v, psr_scale, f)
    table = {}
    for name, predict in predictions.items():
        rows = [measure_prediction(predict(v), v, psr_scale).values for v in test_volumes]
        table[name] = {k: float(np.nanmean([r.get(k, np.nan) for r in rows])) for k in ("psnr", "ssim", "auc_combined")}
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-bids", type=Path, required=True)
    parser.add_argument("--test-bids", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="preprocessing cache (the train level's work dir)")
    parser.add_argument("--size", action="append", default=None, help="CHANNELS:LATENT, repeatable")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    from demist_bids.training.external import preprocessed_volumes

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.size or ["16,32,32:8", "16,32:4"]
    start = time.monotonic()
    train = preprocessed_volumes(args.train_bids, args.work, "train_preproc")
    test = preprocessed_volumes(args.test_bids, args.work, "test_preproc")
    table = ceilings(train, test, sizes, steps=args.steps, seed=args.seed)
    print(f"{'method':<14} {'PSNR dB':>8} {'SSIM':>7} {'AUC':>7}   ({len(test)} test scans, "
          f"{args.steps} steps, {time.monotonic() - start:.0f} s)")
    for name, row in table.items():
        print(f"{name:<14} {row['psnr']:8.2f} {row['ssim']:7.3f} {row['auc_combined']:7.3f}")
    print(" ".join(f"{name}={row['psnr']:.2f}/{row['ssim']:.3f}/{row['auc_combined']:.3f}"
                   for name, row in table.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
