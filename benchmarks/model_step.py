"""Build a DEMIST preset and time one denoising step at a given latent size.

Usage::

    python benchmarks/model_step.py --preset paper --latent 24 24 24
    python benchmarks/model_step.py --preset small --latent 40 48 40 --device cuda

The backbone gets non-zero weights first (a fresh MONAI UNet ends in a zero
convolution and would predict zero everywhere, making the zero-init check
meaningless): ``--backbone PATH`` loads the BraTS bundle weights, otherwise
every backbone weight is perturbed with Gaussian noise (std 0.02), standing in
for a pretrained network. ``init_max_abs_diff`` is then the largest difference
between the full model's noise prediction and the frozen backbone's, which must
be zero up to floating point.

Last line::

    params_total=<n> params_trainable=<n> init_max_abs_diff=<x> step_s=<s> peak_mem_gb=<g>

``step_s`` is the median wall time of one conditional noise prediction
(inference, the unit of sampling cost); the line before it reports one
training step (forward, backward and AdamW update of the streams).
``peak_mem_gb`` is the CUDA peak allocation on GPU, the process peak RSS on CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on shared CPUs

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402


def _peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["paper", "small"], default="paper")
    parser.add_argument("--ablation", default="full", help="full, lora, controlnet, ft-ldm")
    parser.add_argument("--latent", type=int, nargs=3, default=[24, 24, 24], metavar=("X", "Y", "Z"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default=None, help="bundle-format backbone weights (.pt)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--no-train-step", action="store_true", help="skip the training-step timing")
    args = parser.parse_args(argv)

    from demist_bids.models.config import preset
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import load_backbone_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(preset(args.preset, ablation=args.ablation))
    if args.backbone:
        load_backbone_weights(model, args.backbone)
    else:
        with torch.no_grad():
            for param in model.backbone_parameters():
                param.add_(0.02 * torch.randn_like(param))
        model.sync_controlnet_from_backbone()
    model = model.to(device)
    cuda = device.startswith("cuda")
    model.use_sdpa(cuda)
    print(f"build_s={time.perf_counter() - start:.1f} preset={args.preset} ablation={args.ablation} device={device}")

    params_total = sum(p.numel() for p in model.parameters())
    params_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shape = (1, model.config.autoencoder.latent_channels, *args.latent)
    generator = torch.Generator().manual_seed(1)
    z_t = torch.randn(shape, generator=generator).to(device)
    z_c = torch.randn(shape, generator=generator).to(device)
    t = torch.tensor([500], device=device)

    with torch.no_grad():
        diff = (model.predict_noise(z_t, t, z_c) - model.backbone_noise(z_t, t)).abs().max().item()

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            _sync(device)
            tic = time.perf_counter()
            with autocast:
                model.predict_noise(z_t, t, z_c)
            _sync(device)
            times.append(time.perf_counter() - tic)
    step_s = statistics.median(times)

    if not args.no_train_step:
        model.train()
        optimizer = torch.optim.AdamW(model.trainable_stream_parameters(), lr=1e-4)
        _sync(device)
        tic = time.perf_counter()
        with autocast:
            loss = (model.predict_noise(z_t, t, z_c).float() - z_c).pow(2).mean()
        loss.backward()
        optimizer.step()
        _sync(device)
        print(f"train_step_s={time.perf_counter() - tic:.3f}")

    print(
        f"params_total={params_total} params_trainable={params_trainable} "
        f"init_max_abs_diff={diff:.3g} step_s={step_s:.3f} peak_mem_gb={_peak_memory_gb(device):.2f}"
    )


if __name__ == "__main__":
    main()
