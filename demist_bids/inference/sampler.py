"""Synthesis of a PSR map from a T1w+FLAIR pair: the participant-level inference.

One call encodes the condition once, runs ``samples`` reverse-diffusion chains
from seeded noise with any scheduler of :mod:`demist_bids.inference.schedulers`,
decodes each chain once, and returns the voxel-wise mean and standard deviation
(an uncertainty map) in PSR units. The UNet sees either the whole padded
latent or a latent-space sliding window with Gaussian blending (as MONAI MAISI
does), chosen from the memory available. The autoencoders always run in
Gaussian-blended windows no larger than a training patch: their GroupNorm
layers normalize over the whole input, so a whole brain box (mostly background
at the edges) is normalized unlike the patches they were trained on. On the
2x-latent demo model, decoding the conditioning latent of a fresh phantom
cohort scored 18.4 dB whole and 24.7 dB in 32^3 windows (3 scans, PSNR inside
the brain). Their window overlap matters as much and is set per model
(``SamplingConfig.autoencoder_overlap``, with its measurements). The UNet, in
contrast, is better whole: on 6 seed-23 scans 16^3 latent windows scored
22.27 dB against 22.67 dB for the whole latent. Windows
go through the networks several at a time (:attr:`InferencePlan.window_batch`).
On CUDA the networks run under bf16 autocast with SDPA attention; on CPU in
fp32 unless the model asks for bf16 and the CPU computes it natively (bf16 is
3-4x slower on CPUs without bf16 units, REFERENCE §2; 2x faster on the
AVX512-BF16 CPU of this project's machines).
"""

from __future__ import annotations

import contextlib
import math
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from demist_bids.inference.grid import content_box, crop_to_original, pad_to_multiple
from demist_bids.inference.memory import InferencePlan, plan_inference
from demist_bids.inference.schedulers import make_scheduler, training_scheduler
from demist_bids.models.config import WINDOW_BLENDS, ModelConfig
from demist_bids.models.demist import DemistModel, check_guidance_interval
from demist_bids.utils.devices import resolve_device

LOGGER = logging.getLogger("demist.inference")

__all__ = [
    "SynthesisResult", "synthesize", "chain_seed",
    "decode_condition", "reconstruct_psr",
]

_LATENT_OVERLAP = 0.5


@dataclass
class SynthesisResult:
    """A synthesized PSR map and how it was made."""

    mean: np.ndarray
    """X x Y x Z float32 mean over samples, PSR units (``psr_scale`` applied)."""
    std: np.ndarray | None
    """Per-voxel standard deviation across samples (ddof=1), PSR units; None for one sample."""
    info: dict[str, Any] = field(default_factory=dict)
    """sampler, steps, samples, seed, device, dtype, mode (whole/window), seconds..."""


def start_schedule(sampler: str, schedule, steps: int, start: float) -> tuple[int, list[int]]:
    """The scheduler length and the timesteps run for ``steps`` steps from ``start``.

    From pure noise (start 1) that is the usual ``steps``-step schedule. Below 1
    it is the shortest schedule with ``steps`` timesteps below ``start`` of the
    training schedule, of which exactly the last ``steps`` are run, so ``steps``
    is always the number of network evaluations.
    """
    total = int(schedule.num_train_timesteps)
    if start >= 1:
        return steps, [int(t) for t in make_scheduler(sampler, schedule, steps).timesteps]
    limit = start * total
    length = min(total, max(steps, math.ceil(steps / start)))
    while True:
        kept = [int(t) for t in make_scheduler(sampler, schedule, length).timesteps if int(t) < limit]
        if len(kept) >= steps or length >= total:
            return length, kept[-steps:] if kept else [0]
        length = min(total, length + max(1, length // 20))


def cpu_has_native_bf16() -> bool:
    """True where oneDNN computes bf16 natively (AVX512-BF16 or AMX): autocast is faster there."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> bool:
    """Whether to run under bf16 autocast: ``auto``/``bf16`` on CUDA, ``bf16`` on a bf16-capable CPU."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.startswith("cuda"):
        return precision in ("auto", "bf16")
    if precision == "bf16" and not cpu_has_native_bf16():
        LOGGER.info("bf16 requested but this CPU has no native bf16: running in fp32")
        return False
    return precision == "bf16"


def chain_seed(seed: int, sample: int) -> int:
    """Independent, reproducible seed of chain ``sample`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, sample]).generate_state(1)[0])


def _windowed(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    roi: tuple[int, ...],
    overlap: float,
    batch: int,
    mode: str = "gaussian",
) -> torch.Tensor:
    """MONAI's sliding window, blended with ``mode`` weights, ``batch`` windows per network call.

    Batching changes no result (every normalization is per sample) but matters on
    CPUs: PyTorch runs a batch-1 3D convolution on a 32^3 patch through its slow
    non-oneDNN path, about 9x slower per window than a batch of 2 or 4.
    """
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        inputs, roi_size=roi, sw_batch_size=batch, predictor=predictor, overlap=overlap, mode=mode
    )


class VolumeRunner:
    """The three network passes of one volume, whole or windowed, under the right precision."""

    def __init__(self, model: DemistModel, plan: InferencePlan, device: str, bf16: bool) -> None:
        self.model = model
        self.plan = plan
        self.latent = model.config.autoencoder.latent_channels
        self.factor = model.config.autoencoder.downsampling
        self.overlap = float(model.config.sampling.autoencoder_overlap)
        self.blend = str(model.config.sampling.autoencoder_blend)
        """Window weights of the encoding passes (the condition and, for diagnostics, the PSR map)."""
        self.decoder_blend = str(model.config.sampling.decoder_blend or self.blend)
        self.guidance = float(model.config.sampling.guidance)
        self.guidance_interval = model.config.sampling.guidance_interval
        check_guidance_interval(self.guidance_interval)  # before any network pass
        self.anchor = model.anchored
        """Blend each noise estimate towards z_c with the model's fitted weights (``ModelConfig.anchor``)."""
        self.noise_scale = float(model.config.sampling.noise_scale)
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"sampling.autoencoder_overlap must be in [0, 1), got {self.overlap}")
        for name, blend in (("autoencoder_blend", self.blend), ("decoder_blend", self.decoder_blend)):
            if blend not in WINDOW_BLENDS:
                raise ValueError(f"sampling.{name} must be one of {WINDOW_BLENDS}, got {blend!r}")
        if not self.noise_scale > 0.0:
            raise ValueError(f"sampling.noise_scale must be positive, got {self.noise_scale}")
        kind = "cuda" if device.startswith("cuda") else "cpu"
        self.autocast = (lambda: torch.autocast(kind, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def autoencoder_window(self) -> tuple[int, int, int]:
        """Image-space window of the autoencoder passes: the training patch, or the memory plan's if smaller."""
        patch = tuple(int(p) for p in self.model.config.patch_size)
        if self.plan.whole:
            return patch
        return tuple(min(p, w * self.factor) for p, w in zip(patch, self.plan.latent_window))

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            z_c = _windowed(
                self.model.encode_condition, cond, self.autoencoder_window(), self.overlap, self.plan.window_batch,
                self.blend,
            )
        return z_c.float()

    def encode_psr(self, psr01: torch.Tensor) -> torch.Tensor:
        """The PSR latent of a whole map (diagnostics and the autoencoder's ceiling)."""
        with self.autocast():
            z_y = _windowed(
                self.model.encode_psr, psr01, self.autoencoder_window(), self.overlap, self.plan.window_batch,
                self.blend,
            )
        return z_y.float()

    def _guided(self, z_t: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        return self.model.guided_noise(z_t, t, z_c, self.guidance)

    def noise(self, z_t: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            if self.plan.whole:
                eps = self._guided(z_t, t, z_c)
            else:
                latent = self.latent

                def predictor(window: torch.Tensor) -> torch.Tensor:
                    return self._guided(window[:, :latent], t[:1].expand(len(window)), window[:, latent:])

                eps = _windowed(
                    predictor, torch.cat([z_t, z_c], dim=1), self.plan.latent_window, _LATENT_OVERLAP,
                    self.plan.window_batch,
                )
        eps = eps.float()
        if self.noise_scale != 1.0:
            eps = eps / self.noise_scale
        if self.anchor:
            eps = self.model.anchor_noise(eps, z_t, int(t[0]), z_c)
        return eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        roi = tuple(w // self.factor for w in self.autoencoder_window())
        with self.autocast():
            image = _windowed(self.model.decode_psr, z, roi, self.overlap, self.plan.window_batch,
                              self.decoder_blend)
        return image.float()



@dataclass
class PreparedVolume:
    """A volume cut, padded and planned the way :func:`synthesize` runs it."""

    runner: VolumeRunner
    image: torch.Tensor
    """1 x C x padded grid, on the device."""
    box: tuple[slice, ...]
    """Where the padded volume's content sits in the input grid."""
    crop: tuple[slice, ...]
    """The box's voxels inside the padded grid (:func:`crop_to_original`)."""
    device: str
    bf16: bool

    def paste(self, psr01: torch.Tensor, shape: tuple[int, ...], scale: float, clamp: bool = True) -> np.ndarray:
        """A decoded 1 x 1 x padded map, clamped to [0, 1] unless ``clamp`` is False, in PSR units on the input
        grid (0 outside the box)."""
        out = np.zeros(shape, np.float32)
        psr01 = psr01.clamp(0.0, 1.0) if clamp else psr01
        out[self.box] = crop_to_original(psr01[0, 0].float().cpu().numpy(), self.crop) * scale
        return out


def prepare_volume(
    model: DemistModel,
    volume: np.ndarray,
    device: str,
    precision: str | None,
    *,
    crop_to_content: bool = True,
    window: str | tuple[int, int, int] = "auto",
    budget_bytes: int | None = None,
) -> PreparedVolume:
    """Crop ``volume`` (C x X x Y x Z) to its content, pad it and plan its passes; the model goes to ``device``."""
    device = resolve_device(device)
    cuda = device.startswith("cuda")
    bf16 = resolve_precision(model.config.sampling.precision if precision is None else precision, device)
    model = model.to(device).eval()
    model.use_sdpa(cuda)
    box = content_box(volume) if crop_to_content else tuple(slice(0, n) for n in volume.shape[1:])
    padded, crop = pad_to_multiple(volume[(slice(None), *box)], model.config.size_multiple)
    plan = plan_inference(model.config, tuple(padded.shape[1:]), device, sdpa=cuda,
                          budget_bytes=budget_bytes, window=window)
    image = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None].to(device)
    return PreparedVolume(VolumeRunner(model, plan, device, bf16), image, box, crop, device, bf16)


@torch.no_grad()
def decode_condition(model: DemistModel, cond: np.ndarray, *, device: str = "cpu",
                     precision: str | None = None, clamp: bool = True) -> np.ndarray:
    """The PSR decoder applied to the conditioning latent z_c: DEMIST with no diffusion at all.

    The evaluation's ``no-diffusion`` row: what the aligned encoder alone gives, so
    the table shows what the diffusion steps add to it (issue 16). Same windows,
    crop and precision as :func:`synthesize`; PSR units on ``cond``'s grid, clamped to the
    PSR range unless ``clamp`` is False (as :func:`synthesize`).
    """
    cond = np.asarray(cond, dtype=np.float32)
    prepared = prepare_volume(model, cond, device, precision)
    z_c = prepared.runner.encode(prepared.image)
    return prepared.paste(prepared.runner.decode(z_c), cond.shape[1:], model.config.psr_scale, clamp)


@torch.no_grad()
def reconstruct_psr(model: DemistModel, psr: np.ndarray, *, device: str = "cpu",
                    precision: str | None = None, latent_noise: float = 0.0, seed: int = 0,
                    clamp: bool = True) -> np.ndarray:
    """A measured PSR map (PSR units, X x Y x Z) through the PSR autoencoder and back.

    The evaluation's ``ae-ceiling`` row: nothing that works in this latent space
    can beat its own autoencoder's reconstruction. PSR units on ``psr``'s grid.
    ``latent_noise``: the std of white Gaussian noise (``seed``) added to the latent before
    decoding, in the diffusion's standardized latent units: how the decoder turns a latent error
    with no level of its own into a map error (issue 16, session 22). ``clamp`` as in :func:`synthesize`.
    """
    psr01 = np.asarray(psr, dtype=np.float32)[None] / model.config.psr_scale
    prepared = prepare_volume(model, psr01, device, precision)
    z_y = prepared.runner.encode_psr(prepared.image)
    if latent_noise:
        noise = torch.randn(z_y.shape, generator=torch.Generator().manual_seed(seed)).to(z_y.device)
        z_y = z_y + float(latent_noise) * noise
    return prepared.paste(prepared.runner.decode(z_y), psr01.shape[1:], model.config.psr_scale, clamp)


@torch.no_grad()
def estimate_from_truth(model: DemistModel, cond: np.ndarray, psr: np.ndarray, timestep: int, *, seed: int = 0,
                        device: str = "cpu", precision: str | None = None, anchor: bool | None = None) -> np.ndarray:
    """The model's clean estimate at ``timestep`` from the measured PSR's latent noised by the forward process.

    Where a sampler's chain would stand at ``timestep`` if every earlier step had been perfect: the
    network sees a state it was trained on, not one of its own. Beside the chain's own estimate at
    the same step it separates an error the network makes on training-like states from one it makes
    on its own (exposure bias; issue 16, session 22). ``cond`` and ``psr`` on one grid (PSR units);
    the model's guidance and noise scale apply as in :func:`synthesize`, and its blend towards z_c
    as ``anchor`` says (None: whenever the model has one; compare with a chain run the same way).
    PSR units, clipped.
    """
    cond = np.asarray(cond, dtype=np.float32)
    prepared = prepare_volume(model, cond, device, precision)
    runner, scale = prepared.runner, model.config.psr_scale
    if anchor is not None:
        if anchor and not model.anchored:
            raise ValueError("anchor=True but the model has no fitted anchor weights (ModelConfig.anchor)")
        runner.anchor = bool(anchor)
    z_c = runner.encode(prepared.image)
    psr01 = np.asarray(psr, dtype=np.float32)[None][(slice(None), *prepared.box)] / scale
    padded, _ = pad_to_multiple(psr01, model.config.size_multiple)
    z_y = runner.encode_psr(torch.from_numpy(np.ascontiguousarray(padded))[None].to(prepared.device))
    abar = float(training_scheduler(model.config.schedule).alphas_cumprod[int(timestep)])
    noise = torch.randn(z_y.shape, generator=torch.Generator().manual_seed(seed)).to(z_y.device)
    z_t = math.sqrt(abar) * z_y + math.sqrt(1.0 - abar) * noise
    t = torch.full((z_t.shape[0],), int(timestep), device=z_t.device, dtype=torch.long)
    z_0 = (z_t - math.sqrt(1.0 - abar) * runner.noise(z_t, t, z_c)) / math.sqrt(abar)
    return prepared.paste(runner.decode(z_0), cond.shape[1:], scale)


@torch.no_grad()
def synthesize(
    model: DemistModel,
    cond: np.ndarray,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    window: str | tuple[int, int, int] = "auto",
    memory_budget_gb: float | None = None,
    crop_to_content: bool = True,
    precision: str | None = None,
    start: float | None = None,
    anchor: bool | None = None,
    clamp: bool = True,
) -> SynthesisResult:
    """Synthesize a PSR map.

    Args:
        model: a trained model (moved to ``device`` here).
        cond: 2 x X x Y x Z float32 T1w, FLAIR in [0, 1] on the 1 mm RAS grid; any size.
        sampler: ``ddpm``, ``ddim`` or ``dpm++``.
        steps: sampling steps.
        samples: independent chains; more than one gives a std map.
        seed: seeds chain k with :func:`chain_seed` ``(seed, k)``.
        device: ``cpu``, ``cuda[:n]`` or ``auto``.
        progress: called as ``progress(done, total)`` after every denoising step.
        window: ``auto`` (from memory), ``whole``, or a latent window size.
        memory_budget_gb: memory to plan against instead of the free memory.
        crop_to_content: synthesize only inside the bounding box of the non-zero
            input voxels (plus a margin); the map is 0 outside it.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or
            ``bf16`` (autocast on CUDA and on CPUs with native bf16, AVX512-BF16/AMX;
            fp32 on other CPUs). None takes the model's ``sampling.precision``.
        start: where on the noise schedule (0-1] the reverse process starts; below 1 it
            starts from the aligned conditioning latent noised to that level (see
            :attr:`SamplingConfig.start`). None takes the model's value.
        anchor: blend every clean-latent estimate towards z_c with the model's fitted weights
            (:class:`~demist_bids.models.config.AnchorConfig`); None: whenever the model has them.
            False runs the paper's sampler unchanged.
        clamp: clip every decoded sample to [0, 1] of the PSR scale before the mean and std (a
            PSR map is never negative). False keeps the decoder's values: a diagnostic of what the
            clip adds to a map's level where a noisy sample crosses 0.

    Returns:
        Mean and std in PSR units on the input grid, plus run information.
    """
    cond = np.asarray(cond, dtype=np.float32)
    if cond.ndim != 4 or cond.shape[0] != len(model.config.input_channels):
        raise ValueError(f"cond must be {len(model.config.input_channels)} x X x Y x Z, got {cond.shape}")
    if not np.isfinite(cond).all():
        raise ValueError("cond holds NaN or infinite values")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    level = float(model.config.sampling.start if start is None else start)
    if not 0.0 < level <= 1.0:
        raise ValueError(f"start must be in (0, 1], got {level}")
    start = time.perf_counter()
    budget = None if memory_budget_gb is None else int(memory_budget_gb * 1e9)
    prepared = prepare_volume(model, cond, device, precision, crop_to_content=crop_to_content,
                              window=window, budget_bytes=budget)
    runner, box, crop, plan = prepared.runner, prepared.box, prepared.crop, prepared.runner.plan
    if anchor is not None:
        if anchor and not runner.model.anchored:
            raise ValueError("anchor=True but the model has no fitted anchor weights (ModelConfig.anchor)")
        runner.anchor = bool(anchor)
    model, device, bf16 = runner.model, prepared.device, prepared.bf16
    cuda = device.startswith("cuda")
    image_shape = tuple(prepared.image.shape[2:])

    z_c = runner.encode(prepared.image)
    latent_shape = z_c.shape
    length, timesteps = start_schedule(sampler, model.config.schedule, steps, level)
    total = samples * len(timesteps)
    done = 0
    count, mean, m2 = 0, None, None
    for k in range(samples):
        scheduler = make_scheduler(sampler, model.config.schedule, length)
        cpu_gen = torch.Generator().manual_seed(chain_seed(seed, k))
        step_gen = cpu_gen if not cuda else torch.Generator(device).manual_seed(chain_seed(seed, k) + 1)
        z = torch.randn(latent_shape, generator=cpu_gen).to(device)
        if level < 1:  # SDEdit: the aligned conditioning latent, noised to the first timestep
            abar = float(training_scheduler(model.config.schedule).alphas_cumprod[int(timesteps[0])])
            z = math.sqrt(abar) * z_c + math.sqrt(1.0 - abar) * z
        for t in timesteps:
            t_batch = torch.full((latent_shape[0],), int(t), device=device, dtype=torch.long)
            eps = runner.noise(z, t_batch, z_c)
            z, _ = scheduler.step(eps, int(t), z, generator=step_gen)
            done += 1
            if progress is not None:
                progress(done, total)
        psr01 = runner.decode(z)
        psr01 = (psr01.clamp_(0.0, 1.0) if clamp else psr01)[0, 0].cpu().numpy()
        psr01 = crop_to_original(psr01, crop).astype(np.float64)
        count += 1  # Welford: mean and variance without keeping every sample
        if mean is None:
            mean, m2 = psr01.copy(), np.zeros_like(psr01)
        else:
            delta = psr01 - mean
            mean += delta / count
            m2 += delta * (psr01 - mean)

    scale = model.config.psr_scale
    mean_map = np.zeros(cond.shape[1:], np.float32)
    mean_map[box] = mean * scale
    std_map = None
    if samples > 1:
        std_map = np.zeros(cond.shape[1:], np.float32)
        std_map[box] = np.sqrt(m2 / (samples - 1)) * scale
    seconds = time.perf_counter() - start
    info = {
        "sampler": sampler,
        "steps": len(timesteps),
        "start": level,
        "samples": samples,
        "seed": seed,
        "device": device,
        "dtype": "bfloat16-autocast" if bf16 else "float32",
        "mode": "whole" if plan.whole else "window",
        "latent_window": list(plan.latent_window) if plan.latent_window else None,
        "window_batch": plan.window_batch,
        "autoencoder_overlap": runner.overlap,
        "autoencoder_blend": runner.blend,
        "decoder_blend": runner.decoder_blend,
        "guidance": runner.guidance,
        "unconditional": runner.model.config.sampling.unconditional if runner.guidance != 1 else None,
        "guidance_interval": runner.guidance_interval if runner.guidance != 1 else None,
        "anchor": runner.anchor,
        "noise_scale": runner.noise_scale,
        "clamp": clamp,
        "box": [[b.start, b.stop] for b in box],
        "padded_shape": list(image_shape),
        "psr_scale": scale,
        "seconds": round(seconds, 3),
    }
    LOGGER.info("synthesized %s in %.1f s (%s x %d steps, %d samples)", cond.shape[1:], seconds, sampler, steps, samples)
    return SynthesisResult(mean=mean_map, std=std_map, info=info)
