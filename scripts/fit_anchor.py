"""Fit the blend towards z_c (ModelConfig.anchor) onto a model trained before the train level did it.

The train level fits it after every diffusion stage (recipe ``anchor_batches``). This
script does the same for an existing model directory, on the un-augmented patches of
its training cohort, in place::

    python scripts/fit_anchor.py MODEL_DIR --train-bids BIDS --work WORK [--batches 8] [--guidance G] [--steps N]

It rewrites the directory (weights in their stored precision, the card's README
regenerated), prints the per-knot weights and the latent MSE of the network's estimate, of z_c and
of the blend, and stores the weights in ``config.json`` (the card gains ``anchor_fit``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--train-bids", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="Nipype work directory (preprocessing cache)")
    parser.add_argument("--cache", default="train_preproc")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's sampling guidance")
    parser.add_argument("--steps", type=int, default=0,
                        help="fit along DDIM-N chains from pure noise (0: on the forward process at fixed knots)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from demist_bids.models.io import load_model, save_model
    from demist_bids.training.anchor import fit_anchor
    from demist_bids.training.external import preprocessed_volumes
    from demist_bids.training.model_card import write_model_card
    from demist_bids.training.patches import PatchSampler

    model = load_model(args.model).eval()
    volumes = preprocessed_volumes(args.train_bids, args.work, args.cache)
    sampler = PatchSampler(volumes, list(model.config.patch_size), model.config.psr_scale, seed=args.seed, rank=0)
    batches = list(sampler.fixed_batches(args.batches, args.batch_size, stream=98))
    model.config.anchor, report = fit_anchor(model, batches, guidance=args.guidance, steps=args.steps,
                                              seed=args.seed)
    weights = "float16" if _stored_as_half(args.model) else "float32"
    save_model(model, args.model, card={"anchor_fit": report}, weights=weights)
    write_model_card(args.model)  # save_model replaced the directory, card included
    for knot, row in zip(model.config.anchor.weights, report):
        print(f"t={row['timestep']:<4} weights {' '.join(f'{w:.3f}' for w in knot)}  latent MSE model "
              f"{row['mse_model']:.4f}  z_c {row['mse_condition']:.4f}  blend {row['mse_blend']:.4f}")
    return 0


def _stored_as_half(directory: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(directory / "backbone.safetensors"), "pt") as handle:
        first = next(iter(handle.keys()))
        return "16" in str(handle.get_tensor(first).dtype)


if __name__ == "__main__":
    sys.exit(main())
