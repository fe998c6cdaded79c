"""The GPU check: the paper preset's sampling cost on one GPU, with random weights in the bundle format.

Usage (``benchmarks/gpu_check.sh`` is the one command; it passes its arguments on)::

    benchmarks/gpu_check.sh                       # on a machine with one CUDA GPU, under 6 minutes
    benchmarks/gpu_check.sh --dry-run             # the same code end to end on the CPU, tiny, seconds
    benchmarks/gpu_check.sh --peak-tflops 400     # a GPU missing from the peak-rate table

What it does, in one process:

1. Writes random backbone (DiffusionModelUNet) and autoencoder (AutoencoderKL)
   weights in the MONAI BraTS latent-diffusion bundle's format, the old MONAI
   GenerativeModels key layout (REFERENCE §2), to a temporary folder removed at
   exit: with ``monai-generative`` (0.2.3, as ``.ci/run`` installs it) when it
   imports, otherwise MONAI's own networks with their keys renamed to the old
   layout (``tests/benchmarks/test_gpu_check.py`` checks that both give the same
   keys and shapes). The model is built from the preset and filled through the
   loaders a real bundle goes through (``load_backbone_weights``,
   ``load_autoencoder_weights``); the conditioning streams are perturbed from their
   zero initialisation so that none of them is trivially zero.
2. Times one denoising step (UNet + ControlNet + semantic cross-attention, the
   unit of sampling cost) on the whole latent at fp32 and under bf16 autocast,
   SDPA attention on (median of ``--repeats`` after ``--warmup``).
3. Counts the step's FLOPs with ``torch.utils.flop_counter.FlopCounterMode``, and
   those of a whole synthesis (``synthesize`` with 1 and with 2 DDIM steps, which
   also warms every pass up): a run of n steps costs F(1) + (n - 1) (F(2) - F(1)).
4. Times ``synthesize`` (the participant level's sampler: one encode of the
   condition, ``--steps`` DDIM steps from pure noise, one decode; bf16, its own
   memory plan) on an ellipsoid head of ``--shape`` voxels, the whole grid
   (no cropping to content).
5. Times the distilled student's synthesis. There are no trained weights, so the
   student is a random one of the same architecture: a copy of the model with
   its streams perturbed anew and its config marked distilled for
   ``--student-steps`` DDIM steps (by default the paper preset's
   ``train --stage distill`` target, ``DistillSettings.student_steps``), the way
   ``training/distill.py`` makes one. Its cost is what a trained student costs:
   the same networks, fewer steps.
6. Prints the peak memory (``torch.cuda.max_memory_allocated``; the process peak
   RSS on a CPU) and the ratio of measured time to the FLOP bound, FLOPs divided
   by the device's peak dense bf16 rate (``PEAK_BF16_TFLOPS``, matched on the
   device name; ``--peak-tflops`` overrides it; unknown, as on a CPU, gives nan).

The last line::

    step_fp32_s=<s> step_bf16_s=<s> ddim_total_s=<s> ddim_steps=<n> student_total_s=<s> student_steps=<n> \
peak_mem_gb=<g> step_tflop=<x> ddim_tflop=<x> peak_bf16_tflops=<x> step_bound_ratio=<x> ddim_bound_ratio=<x> wall_s=<s>

``step_bound_ratio`` is ``step_bf16_s`` over the step's FLOP bound (1 would be
the device's peak rate; 3 means a third of it), ``ddim_bound_ratio`` the same for
the whole synthesis. ``--dry-run`` runs the same code on the CPU with a tiny
network of the paper preset's shape (three levels, attention at the two deeper
ones, 4x latent with 8 channels, epsilon prediction), a 32x48x32 head, 3 DDIM
steps and a 2-step student: its numbers only show that every part runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on shared CPUs

import argparse  # noqa: E402
import copy  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("RTX 4090", 165.0),
)
"""Peak dense (no sparsity) bf16 tensor rates in TFLOP/s from the vendors' data sheets; the first
entry whose name occurs in the device name wins (so the H100 PCIe and NVL come before the SXM)."""

FULL = {"shape": [160, 192, 160], "steps": 50, "repeats": 3, "warmup": 1}
DRY_RUN = {"shape": [32, 48, 32], "steps": 3, "repeats": 2, "warmup": 1, "student_steps": 2}

LAST_LINE_KEYS = (
    "step_fp32_s", "step_bf16_s", "ddim_total_s", "ddim_steps", "student_total_s", "student_steps",
    "peak_mem_gb", "step_tflop", "ddim_tflop", "peak_bf16_tflops", "step_bound_ratio", "ddim_bound_ratio",
    "wall_s",
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The table's peak dense bf16 rate for a device name, or None."""
    for key, rate in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return rate
    return None


def tiny_paper_config():
    """The paper preset's structure at a size a CPU runs in seconds (the dry run's model)."""
    from demist_bids.models.config import preset

    return preset(
        "paper",
        autoencoder={"channels": [8, 16, 16], "norm_num_groups": 8},
        unet={"channels": [16, 16, 32], "num_head_channels": [0, 8, 8], "norm_num_groups": 8},
        streams={"token_dim": 16, "token_grid": [2, 2, 2], "cross_attention_heads": 2, "lora_rank": 4,
                 "lora_alpha": 4.0},
        patch_size=[32, 32, 32],
    )


# -- bundle-format weights -----------------------------------------------------------------------------


def _generative_networks(config):
    """The bundle's two networks as monai-generative 0.2.3 builds them (ImportError without it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its torch.cuda.amp decorators
        from generative.networks import nets

    ae, unet = config.autoencoder, config.unet
    levels = len(ae.channels)
    autoencoder = nets.AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, num_channels=tuple(ae.channels),
        num_res_blocks=ae.num_res_blocks, attention_levels=(False,) * levels, latent_channels=ae.latent_channels,
        norm_num_groups=ae.norm_num_groups, norm_eps=ae.norm_eps,
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    )
    backbone = nets.DiffusionModelUNet(
        spatial_dims=3, in_channels=ae.latent_channels, out_channels=ae.latent_channels,
        num_channels=tuple(unet.channels), attention_levels=tuple(unet.attention_levels),
        num_head_channels=tuple(unet.num_head_channels), num_res_blocks=unet.num_res_blocks,
        norm_num_groups=unet.norm_num_groups, norm_eps=unet.norm_eps,
    )
    return backbone.state_dict(), autoencoder.state_dict()


def renamed_old_format(config):
    """The bundle's key layout without monai-generative: MONAI's networks, keys renamed back.

    The inverse of what MONAI's ``load_old_state_dict`` undoes: self-attention
    ``attn.to_q/k/v`` were ``to_q/k/v`` beside a ``proj_attn`` linear layer, and
    an upsampling ``postconv`` was ``conv``.
    """
    import torch

    from demist_bids.models.autoencoders import build_autoencoder
    from demist_bids.models.unet import build_backbone

    def rename(state):
        return {key.replace(".attn.to_", ".to_").replace(".postconv.", ".conv."): value
                for key, value in state.items()}

    backbone = rename(build_backbone(config.unet, config.autoencoder.latent_channels).state_dict())
    for key in [k for k in backbone if k.endswith(".to_q.weight")]:
        block, width = key[: -len(".to_q.weight")], backbone[key].shape[0]
        linear = torch.nn.Linear(width, width)
        backbone[f"{block}.proj_attn.weight"] = linear.weight.detach().clone()
        backbone[f"{block}.proj_attn.bias"] = linear.bias.detach().clone()
    autoencoder = rename(build_autoencoder(config.autoencoder, 1).state_dict())
    return backbone, autoencoder


def write_bundle_weights(config, folder: Path, seed: int = 0) -> tuple[Path, Path, str]:
    """Random backbone and autoencoder weights in the bundle's (old) format, saved as ``.pt``.

    Every backbone weight gets N(0, 0.02) added: a fresh UNet ends in zero
    convolutions and would predict zero everywhere. Returns both paths and what
    wrote the keys.
    """
    import torch

    torch.manual_seed(seed)
    try:
        backbone, autoencoder = _generative_networks(config)
        source = "monai-generative"
    except ImportError:
        backbone, autoencoder = renamed_old_format(config)
        source = "renamed-monai-keys"
    generator = torch.Generator().manual_seed(seed + 1)
    backbone = {key: value + 0.02 * torch.randn(value.shape, generator=generator) if value.is_floating_point()
                else value for key, value in backbone.items()}
    paths = folder / "model_brats_mri_generative_diffusion_v1.pt", \
        folder / "model_autoencoder_brats_mri_generative_diffusion_v1.pt"
    torch.save(backbone, paths[0])
    torch.save(autoencoder, paths[1])
    return paths[0], paths[1], source


def _perturb_streams(model, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.trainable_stream_parameters():
            param.add_((0.02 * torch.randn(param.shape, generator=generator)).to(param.device))


def build_checked_model(config, folder: Path, seed: int = 0):
    """The model filled from bundle-format random weights through the bundle loaders."""
    import torch

    from demist_bids.models.demist import build_model
    from demist_bids.models.io import load_autoencoder_weights, load_backbone_weights
    from demist_bids.models.unet import plain_state_dict

    backbone_path, autoencoder_path, source = write_bundle_weights(config, folder, seed)
    old_keys = set(torch.load(backbone_path, map_location="cpu", weights_only=True))
    torch.manual_seed(seed)
    model = build_model(config)
    if old_keys == set(plain_state_dict(model.backbone)):
        raise RuntimeError("the backbone file has plain MONAI keys, not the bundle's")
    load_backbone_weights(model, backbone_path)
    load_autoencoder_weights(model, autoencoder_path)
    _perturb_streams(model, seed + 2)
    return model.eval(), source, len(old_keys)


def random_student(model, steps: int, seed: int = 3):
    """A distilled student of the same architecture with random streams, as ``progressive_distillation`` marks one."""
    from demist_bids.models.config import SamplingConfig

    student = copy.deepcopy(model)
    _perturb_streams(student, seed)
    student.config.sampling = SamplingConfig(sampler="ddim", steps=steps, validated=False, distilled_steps=steps)
    return student.eval()


# -- measuring -------------------------------------------------------------------------------------------


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` by ``FlopCounterMode``, with the CPU's flash-attention kernel counted as SDPA."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    mapping = {}
    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_op is not None:
        mapping[cpu_op] = cpu_sdpa
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


class Clock:
    """Wall time of a block, synchronised with the device."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self._sync = torch.cuda.synchronize if self.cuda else (lambda: None)

    def __call__(self, fn) -> float:
        self._sync()
        tic = time.perf_counter()
        fn()
        self._sync()
        return time.perf_counter() - tic


class PeakMemory:
    """CUDA peak allocation per phase and overall, or the process peak RSS on a CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.cuda, self.overall = torch, device.startswith("cuda"), 0.0

    def reset(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def read(self) -> float:
        if self.cuda:
            value = self.torch.cuda.max_memory_allocated() / 1e9
        else:
            value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        self.overall = max(self.overall, value)
        return value


def _autocast(device: str, bf16: bool):
    import torch

    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16)


def time_step(model, device: str, latent: tuple[int, ...], *, bf16: bool, repeats: int, warmup: int) -> float:
    """Median seconds of one conditional noise prediction on the whole latent."""
    import torch

    generator = torch.Generator().manual_seed(1)
    z_t = torch.randn((1, model.config.autoencoder.latent_channels, *latent), generator=generator).to(device)
    z_c = torch.randn(z_t.shape, generator=generator).to(device)
    t = torch.tensor([500], device=device)
    clock = Clock(device)

    def step():
        with torch.no_grad(), _autocast(device, bf16):
            model.predict_noise(z_t, t, z_c)

    for _ in range(warmup):
        step()
    return statistics.median(clock(step) for _ in range(repeats))


def _ratio(seconds: float, flops: int, peak_tflops: float | None) -> float:
    if not peak_tflops or flops <= 0:
        return math.nan
    return seconds / (flops / (peak_tflops * 1e12))


# -- the check -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny paper-shaped network, 32x48x32 head, 3 DDIM steps, on the CPU (plumbing only)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help="head size in voxels (default 160 192 160; dry run 32 48 32)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps of the teacher (default 50; dry run 3)")
    parser.add_argument("--student-steps", type=int, default=None,
                        help="DDIM steps of the student (default: the paper preset's distillation target; dry run 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per precision (default 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default 1)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense bf16 rate in TFLOP/s (default: from the table by name)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _settings(args) -> dict:
    base = DRY_RUN if args.dry_run else FULL
    chosen = {key: getattr(args, key) for key in ("shape", "steps", "repeats", "warmup", "student_steps")}
    settings = {key: (value if value is not None else base.get(key)) for key, value in chosen.items()}
    if settings["student_steps"] is None:
        from demist_bids.training.distill import distill_settings

        settings["student_steps"] = distill_settings("paper").student_steps
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_wall = time.perf_counter()
    logging.basicConfig(level=logging.WARNING)

    import torch

    device = args.device or ("cpu" if args.dry_run else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; --dry-run runs the check on the CPU", file=sys.stderr)
        return 2
    settings = _settings(args)

    import numpy as np

    from demist_bids.inference.sampler import synthesize
    from demist_bids.models.config import preset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sampler_speed import synthetic_head

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops if args.peak_tflops is not None else (peak_bf16_tflops(name) if cuda else None)
    config = tiny_paper_config() if args.dry_run else preset("paper")
    shape = tuple(settings["shape"])
    multiple = config.size_multiple
    if any(n % multiple for n in shape):
        print(f"gpu_check: --shape must be a multiple of {multiple}", file=sys.stderr)
        return 2
    latent = tuple(n // config.autoencoder.downsampling for n in shape)
    say = lambda text: print(text, flush=True)  # noqa: E731
    kind = "DRY RUN, tiny paper-shaped network (numbers are plumbing only)" if args.dry_run else "paper preset"
    say(f"# gpu_check: {kind}, random weights in the bundle format, {'x'.join(map(str, shape))} head "
        f"(latent {'x'.join(map(str, latent))}), device {name}")
    tf32 = (f" tf32_matmul={torch.backends.cuda.matmul.allow_tf32} tf32_cudnn={torch.backends.cudnn.allow_tf32}"
            if cuda else "")
    say(f"device={device} torch={torch.__version__}{tf32}")

    memory = PeakMemory(device)
    with tempfile.TemporaryDirectory(prefix="demist-gpu-check-") as folder:
        tic = time.perf_counter()
        model, source, old_keys = build_checked_model(config, Path(folder), args.seed)
    params = sum(p.numel() for p in model.parameters())
    say(f"weights=bundle-format source={source} backbone_old_keys={old_keys} params={params} "
        f"build_s={time.perf_counter() - tic:.1f}")
    model = model.to(device)
    model.use_sdpa(True)

    steps = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        memory.reset()
        steps[label] = time_step(model, device, latent, bf16=bf16, repeats=settings["repeats"],
                                 warmup=settings["warmup"])
        say(f"step_{label}_s={steps[label]:.4f} peak_mem_gb={memory.read():.2f} "
            f"(UNet+ControlNet+cross-attention, SDPA, median of {settings['repeats']})")
    z = torch.zeros((1, config.autoencoder.latent_channels, *latent), device=device)
    with torch.no_grad():
        step_flops = count_flops(lambda: model.predict_noise(z, torch.tensor([500], device=device), z))

    cond, _, _ = synthetic_head(shape, seed=args.seed)

    def run(net, n: int):
        return synthesize(net, cond, sampler="ddim", steps=n, device=device, precision="bf16", start=1.0,
                          crop_to_content=False, seed=args.seed)

    one = count_flops(lambda: run(model, 1))  # also the warm-up of every pass
    two = count_flops(lambda: run(model, 2))
    per_step = two - one

    def total_flops(n: int) -> int:
        return one + (n - 1) * per_step

    clock = Clock(device)
    memory.reset()
    result = {}
    ddim_s = clock(lambda: result.setdefault("teacher", run(model, settings["steps"])))
    info = result["teacher"].info
    say(f"ddim_total_s={ddim_s:.3f} steps={settings['steps']} peak_mem_gb={memory.read():.2f} "
        f"(encode + {settings['steps']} DDIM steps from pure noise + one decode; {info['dtype']}, "
        f"mode={info['mode']}, window_batch={info['window_batch']})")
    if not np.isfinite(result["teacher"].mean).all():
        say("warning: the synthesized map holds non-finite values")

    student = random_student(model, settings["student_steps"], seed=args.seed + 3)
    run(student, 1)  # its own warm-up (a fresh copy)
    memory.reset()
    student_s = clock(lambda: run(student, student.config.sampling.distilled_steps))
    say(f"student_total_s={student_s:.3f} steps={settings['student_steps']} peak_mem_gb={memory.read():.2f} "
        "(a random student of the same architecture: the model copied, streams perturbed anew, "
        "DDIM at its distilled step count)")

    ddim_flops = total_flops(settings["steps"])
    say(f"step_tflop={step_flops / 1e12:.4g} synthesis_step_tflop={per_step / 1e12:.4g} "
        f"encode_decode_tflop={(one - per_step) / 1e12:.4g} ddim_tflop={ddim_flops / 1e12:.4g} "
        f"(FlopCounterMode)")
    rate = f"{peak:g}" if peak else "nan"
    origin = ("from --peak-tflops" if args.peak_tflops is not None else "from the table") if peak else \
        "(unknown: not in the table; pass --peak-tflops)"
    say(f"peak_bf16_tflops={rate} {origin}; flop bound of one step "
        f"{step_flops / (peak * 1e12) if peak else math.nan:.4g} s")
    fields = {
        "step_fp32_s": f"{steps['fp32']:.4f}", "step_bf16_s": f"{steps['bf16']:.4f}",
        "ddim_total_s": f"{ddim_s:.3f}", "ddim_steps": settings["steps"],
        "student_total_s": f"{student_s:.3f}", "student_steps": settings["student_steps"],
        "peak_mem_gb": f"{memory.overall:.2f}",
        "step_tflop": f"{step_flops / 1e12:.4g}", "ddim_tflop": f"{ddim_flops / 1e12:.4g}",
        "peak_bf16_tflops": rate,
        "step_bound_ratio": f"{_ratio(steps['bf16'], step_flops, peak):.3g}",
        "ddim_bound_ratio": f"{_ratio(ddim_s, ddim_flops, peak):.3g}",
        "wall_s": f"{time.perf_counter() - start_wall:.1f}",
    }
    say(" ".join(f"{key}={fields[key]}" for key in LAST_LINE_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
