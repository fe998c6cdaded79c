"""One denoising step of a preset under execution variants: which of them make sampling faster here.

Usage::

    python benchmarks/step_variants.py --preset small --latent 16 20 16 [--device cuda]

Variants: ``fp32`` (the sampler's CPU path), ``channels_last_3d`` (the latents
and every 5-D weight in ``torch.channels_last_3d``), ``compile``
(``torch.compile`` of the noise prediction), ``bf16`` (autocast; the sampler
uses it on CUDA only). Each prints the median seconds of the conditional noise
prediction (UNet + ControlNet + cross-attention) and its maximum absolute
difference from ``fp32``; the last line names the fastest variant and its
speedup. The compile time is reported separately and not counted.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on shared CPUs

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["small", "paper"], default="small")
    parser.add_argument("--latent", type=int, nargs=3, default=[16, 20, 16], help="latent size (image / 4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="fp32,channels_last_3d,compile,bf16")
    args = parser.parse_args(argv)

    import torch

    from demist_bids.models.config import preset
    from demist_bids.models.demist import build_model

    torch.manual_seed(0)
    model = build_model(preset(args.preset))
    with torch.no_grad():
        for param in model.backbone_parameters() + model.trainable_stream_parameters():
            param.add_(0.02 * torch.randn_like(param))
    model = model.to(args.device).eval()
    model.use_sdpa(True)
    shape = (1, model.config.autoencoder.latent_channels, *args.latent)
    z = torch.randn(shape, device=args.device)
    z_c = torch.randn(shape, device=args.device)
    t = torch.full((1,), 500, device=args.device, dtype=torch.long)
    cuda = args.device.startswith("cuda")

    def timed(fn, inputs) -> tuple[float, torch.Tensor]:
        times = []
        out = None
        for _ in range(args.repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                out = fn(*inputs)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out.float()

    results = {}
    base_s, base = timed(model.predict_noise, (z, t, z_c))
    results["fp32"] = base_s
    print(f"# preset {args.preset}, latent {tuple(args.latent)}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"fp32               {base_s:8.3f} s/step  max|diff| 0")
    for variant in args.variants.split(","):
        if variant == "fp32":
            continue
        fn, inputs, extra = model.predict_noise, (z, t, z_c), ""
        if variant == "channels_last_3d":
            model.to(memory_format=torch.channels_last_3d)
            inputs = (z.to(memory_format=torch.channels_last_3d), t, z_c.to(memory_format=torch.channels_last_3d))
        elif variant == "compile":
            fn = torch.compile(model.predict_noise)
            start = time.perf_counter()
            with torch.no_grad():
                fn(z, t, z_c)
            extra = f"  (compile {time.perf_counter() - start:.1f} s)"
        elif variant == "bf16":
            autocast = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)

            def fn(*a, _ctx=autocast):
                with _ctx if _ctx is not None else contextlib.nullcontext():
                    return model.predict_noise(*a)
        else:
            raise SystemExit(f"unknown variant {variant}")
        seconds, out = timed(fn, inputs)
        model.to(memory_format=torch.contiguous_format)
        results[variant] = seconds
        print(f"{variant:<18} {seconds:8.3f} s/step  max|diff| {float((out - base).abs().max()):.2e}{extra}")
    best = min(results, key=results.get)
    print(f"fastest={best} speedup={base_s / results[best]:.2f}")


if __name__ == "__main__":
    main()
