"""Does the diffusion model use its condition, and did its prior learn anything?

Usage::

    python benchmarks/stream_diagnostics.py                  # embedded demo model, fresh phantom
    python benchmarks/stream_diagnostics.py --model DIR [--phantom-seed 11] [--work DIR]

On training-distribution patches (the model's training patch size, cut from a
fresh ``demist-phantom`` subject the model never saw) and on that subject's
whole brain box, per timestep t in {50, 150, 300, 500, 700, 850, 950}, the
noise-prediction MSE of

(a) ``backbone``: the frozen backbone alone (no streams);
(b) ``full``: the model with its own conditioning latent z_c;
(c) ``mismatched``: the model with the z_c of another patch (or, on the whole
    brain, z_c rolled by half the box front to back);
(d) ``gaussian``: the closed-form denoiser of a per-channel Gaussian with the
    latents' own mean and variance (what a prior that learned nothing gives);
(e) ``oracle``: ``(z_t - sqrt(abar) z_c) / sqrt(1 - abar)``, i.e. trusting z_c
    as the clean latent.

(b) against (c) says how much the condition is used; (a) against (d) whether
the prior learned more than channel means and variances. Then the per-channel
mean and std of data latents beside those of samples of the backbone alone,
and PSNR inside the brain against the true PSR for sampling started at
{0.15, 0.3, 0.5, 0.7, 1.0} of the schedule (below 1 from z_c noised to that
level, 1 from pure noise) with the streams on and off, beside decoding z_c
with no diffusion at all. The last line is::

    cond_ratio_t500=<mean over t >= 500 of MSE(c)/MSE(b)> prior_ratio=<mean over t of MSE(d)/MSE(a)>
    noise_psnr_db=<pure noise, the model's sampler and steps> nodiff_psnr_db=<decode z_c>
    anchored_psnr_db=<pure noise with the fitted blend towards z_c, or nan>

(one line; the ratios on the patches, the PSNRs on the whole phantom box).
``noise_psnr_db`` and the streams columns use the denoiser's own clean estimates;
a model with fitted blend weights (``ModelConfig.anchor``) also gets an
``anchored`` column, the same chains with every estimate blended towards z_c. A
model whose streams steer has cond_ratio well above 2 and a noise_psnr_db near
or above nodiff_psnr_db; a prior that learned something has prior_ratio > 1.
Every number comes from one process, one seed, the same noise draws.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on shared CPUs

import argparse  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

TIMESTEPS = (50, 150, 300, 500, 700, 850, 950)
STARTS = (0.15, 0.3, 0.5, 0.7, 1.0)
PREDICTORS = ("backbone", "full", "mismatched", "gaussian", "oracle")
DEMO_MODEL = Path(__file__).resolve().parents[1] / "demist_bids" / "data" / "models" / "demo"


def patch_latents(model, volumes, count: int, seed: int, batch: int = 4):
    """``(z_y, z_c)`` of ``count`` training-size patches drawn as training draws them (un-augmented)."""
    import torch

    from demist_bids.training.patches import PatchSampler

    sampler = PatchSampler(volumes, model.config.patch_size, model.config.psr_scale, seed=seed)
    z_y, z_c = [], []
    with torch.no_grad():
        for step in range(math.ceil(count / batch)):
            patches = sampler.batch(step, batch, stream=77, augment=False)
            z_y.append(model.encode_psr(patches["psr01"]))
            z_c.append(model.encode_condition(patches["cond"]))
    return torch.cat(z_y)[:count], torch.cat(z_c)[:count]


def gaussian_denoiser(z_t, mean, var, abar: float):
    """E[eps | z_t] when every latent channel is N(mean, var) independently."""
    return math.sqrt(1.0 - abar) * (z_t - math.sqrt(abar) * mean) / (abar * var + 1.0 - abar)


def noise_mse(model, z_y, z_c, z_c_other, *, timesteps=TIMESTEPS, repeats: int = 2, seed: int = 0,
              batch: int = 4) -> dict[int, dict[str, float]]:
    """Per timestep, the noise MSE of each of :data:`PREDICTORS` on the same noise draws."""
    import torch

    from demist_bids.inference.schedulers import training_scheduler

    abars = training_scheduler(model.config.schedule).alphas_cumprod
    dims = [0, *range(2, z_y.ndim)]
    mean, var = z_y.mean(dim=dims, keepdim=True), z_y.var(dim=dims, keepdim=True)
    table: dict[int, dict[str, float]] = {}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in timesteps:
            abar = float(abars[t])
            sums = dict.fromkeys(PREDICTORS, 0.0)
            count = 0
            for _ in range(repeats):
                for lo in range(0, len(z_y), batch):
                    zy, zc, zo = z_y[lo:lo + batch], z_c[lo:lo + batch], z_c_other[lo:lo + batch]
                    noise = torch.randn(zy.shape, generator=generator)
                    z_t = math.sqrt(abar) * zy + math.sqrt(1.0 - abar) * noise
                    steps = torch.full((len(zy),), t, dtype=torch.long)
                    guesses = {
                        "backbone": model.backbone_noise(z_t, steps),
                        "full": model.predict_noise(z_t, steps, zc),
                        "mismatched": model.predict_noise(z_t, steps, zo),
                        "gaussian": gaussian_denoiser(z_t, mean, var, abar),
                        "oracle": (z_t - math.sqrt(abar) * zc) / math.sqrt(1.0 - abar),
                    }
                    for name, guess in guesses.items():
                        sums[name] += float(((guess - noise) ** 2).sum())
                    count += noise.numel()
            table[t] = {name: total / count for name, total in sums.items()}
    return table


def backbone_samples(model, shape, count: int, steps: int, seed: int):
    """``count`` latents sampled from pure noise by the backbone alone (DDIM, ``steps`` steps)."""
    import torch

    from demist_bids.inference.schedulers import make_scheduler

    scheduler = make_scheduler("ddim", model.config.schedule, steps)
    z = torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t in scheduler.timesteps:
            z, _ = scheduler.step(model.backbone_noise(z, torch.full((count,), int(t))), int(t), z)
    return z


def channel_stats(z) -> list[tuple[float, float]]:
    """Per-channel (mean, std) of a B x L x ... latent batch."""
    dims = [0, *range(2, z.ndim)]
    return list(zip(z.mean(dim=dims).tolist(), z.std(dim=dims).tolist()))


def _print_table(title: str, table: dict[int, dict[str, float]]) -> None:
    print(f"\n## noise MSE, {title}")
    print("t     " + "".join(f"{name:>12}" for name in PREDICTORS) + "   mism/full  gauss/backbone")
    for t, row in table.items():
        print(f"{t:<5} " + "".join(f"{row[name]:12.4f}" for name in PREDICTORS)
              + f"   {row['mismatched'] / row['full']:9.2f}  {row['gaussian'] / row['backbone']:14.2f}")


def summary_ratios(table: dict[int, dict[str, float]]) -> tuple[float, float]:
    """``(cond_ratio_t500, prior_ratio)`` of a noise-MSE table."""
    late = [row["mismatched"] / row["full"] for t, row in table.items() if t >= 500]
    prior = [row["gaussian"] / row["backbone"] for row in table.values()]
    return float(np.mean(late)), float(np.mean(prior))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL, help="model directory (default: the demo model)")
    parser.add_argument("--phantom-seed", type=int, default=11,
                        help="seed of the fresh demist-phantom subject (the demo model trained on seed 0)")
    parser.add_argument("--phantom-scale", type=float, default=0.6)
    parser.add_argument("--work", type=Path, default=None,
                        help="where the phantom is made and cached (default: a temporary directory)")
    parser.add_argument("--synthetic-head", action="store_true",
                        help="an ellipsoid head instead of a phantom subject (plumbing checks)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 80, 64], help="synthetic head size")
    parser.add_argument("--patches", type=int, default=16, help="training-size patches to measure on")
    parser.add_argument("--repeats", type=int, default=2, help="noise draws per patch and timestep")
    parser.add_argument("--sampler", default=None, help="default: the model's")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--prior-samples", type=int, default=4, help="backbone-only latents to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="demist-diagnostics-") as work:
            _run(args, Path(work))
    else:
        _run(args, args.work.resolve())


def _run(args, work: Path) -> None:
    import torch

    from demist_bids.evaluation.metrics import image_metrics
    from demist_bids.inference.sampler import prepare_volume, synthesize
    from demist_bids.models.io import load_model
    # benchmarks/ is on sys.path when run as a script; the phantom and its box are the sampler benchmark's
    from sampler_speed import PHANTOM_CROP, _centre_box, phantom_subject, synthetic_head

    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    model = load_model(args.model).eval()
    bare = model.without_streams()
    sampler = args.sampler or model.config.sampling.sampler
    steps = args.steps or int(model.config.sampling.steps)
    if args.synthetic_head:
        cond, truth, brain = synthetic_head(tuple(args.shape), args.seed)
        source = f"synthetic head {tuple(args.shape)}"
    else:
        cond, truth, brain = phantom_subject(work, args.phantom_seed, args.phantom_scale)
        source = f"phantom seed {args.phantom_seed} (scale {args.phantom_scale:g})"
    print(f"# model {args.model}; {source}; sampler {sampler}:{steps}; torch threads {torch.get_num_threads()}")

    from demist_bids.training.volumes import TrainingVolume

    volume = TrainingVolume(name="phantom", cond=cond, psr=truth, brain=brain)
    z_y, z_c = patch_latents(model, [volume], args.patches, args.seed)
    patch_table = noise_mse(model, z_y, z_c, torch.roll(z_c, 1, dims=0), repeats=args.repeats, seed=args.seed)
    _print_table(f"{len(z_y)} training-size patches {tuple(model.config.patch_size)}", patch_table)

    box = _centre_box(brain, [min(n, c) for n, c in zip(brain.shape, PHANTOM_CROP)])
    cond_box, truth_box, brain_box = cond[(slice(None), *box)], truth[box], brain[box]
    # the whole box, padded and windowed exactly as synthesize() runs it
    conditioned = prepare_volume(model, cond_box, "cpu", "fp32", crop_to_content=False)
    measured = prepare_volume(model, (truth_box / model.config.psr_scale)[None].astype(np.float32), "cpu", "fp32",
                              crop_to_content=False)
    with torch.no_grad():
        whole_c = conditioned.runner.encode(conditioned.image)
        whole_y = measured.runner.encode_psr(measured.image)
    other = torch.roll(whole_c, whole_c.shape[3] // 2, dims=3)
    whole_table = noise_mse(model, whole_y, whole_c, other, repeats=args.repeats, seed=args.seed, batch=1)
    padded_shape = tuple(conditioned.image.shape[2:])
    _print_table(f"whole phantom box {padded_shape} (latent {tuple(whole_c.shape[2:])})", whole_table)

    prior = backbone_samples(model, tuple(z_y.shape[1:]), args.prior_samples, 50, args.seed)
    print("\n## latent channel statistics (mean, std)")
    for name, z in (("data z_y", z_y), ("data z_c", z_c), ("backbone samples (DDIM-50)", prior)):
        print(f"{name:<28} " + "  ".join(f"({m:+.3f}, {s:.3f})" for m, s in channel_stats(z)))

    scale = model.config.psr_scale

    def psnr(synthesized) -> float:
        return image_metrics(synthesized, truth_box, brain_box, data_range=scale)["psnr"]

    with torch.no_grad():  # no diffusion: the z_c encoded above, decoded
        nodiff = psnr(conditioned.paste(conditioned.runner.decode(whole_c), brain_box.shape, scale))
    print(f"\n## PSNR (dB) inside the brain of the phantom box, {sampler}:{steps}, seed {args.seed}")
    print(f"no diffusion (decode z_c): {nodiff:.2f}")
    print("start   streams_on  streams_off" + ("  anchored" if model.anchored else ""))
    noise_psnr = anchored_psnr = math.nan
    runs = [(model, False), (bare, False)] + ([(model, True)] if model.anchored else [])
    for level in STARTS:
        row = []
        for net, anchor in runs:
            result = synthesize(net, cond_box, sampler=sampler, steps=steps, start=level, seed=args.seed,
                                precision="fp32", crop_to_content=False, anchor=anchor)
            row.append(psnr(result.mean))
        if level == 1.0:
            noise_psnr = row[0]
            anchored_psnr = row[2] if model.anchored else math.nan
        print(f"{level:<7} {row[0]:11.2f} {row[1]:12.2f}" + (f" {row[2]:9.2f}" if model.anchored else ""))
    print(f"# {time.perf_counter() - began:.0f} s")
    cond_ratio, prior_ratio = summary_ratios(patch_table)
    print(f"cond_ratio_t500={cond_ratio:.3f} prior_ratio={prior_ratio:.3f} "
          f"noise_psnr_db={noise_psnr:.2f} nodiff_psnr_db={nodiff:.2f} anchored_psnr_db={anchored_psnr:.2f}")


if __name__ == "__main__":
    main()
