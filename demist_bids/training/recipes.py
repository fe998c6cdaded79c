"""Training hyper-parameters per preset: step counts, learning rates, loss weights.

The paper gives none of these (REFERENCE section 1), so they are choices,
recorded here and copied into every model card. The ``small`` recipe is sized
so that a 6-subject phantom cohort trains, cross-validates and evaluates on a
2-core CPU in minutes; ``paper`` follows the published patch size with step
counts typical of 3D latent diffusion fine-tuning on GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

STAGES = ("ae", "align", "backbone", "diffusion", "regressor")
"""Optimisation stages in order; ``eval`` follows them in cross-validation. ``regressor``
(the U-Net baseline) needs none of the others and is trained on cross-validation folds only."""

REGRESSOR_STEPS = {"small": 75, "paper": 200000}
"""Steps of the ``regressor`` stage, chosen so that the U-Net baseline gets the compute of one
method's ``diffusion`` stage (the brief of issue 16: same patches, same budget). One diffusion
step (encode both patches, UNet + streams forward and backward, the edge term's decode for the
half of the steps with t < 500) against one regressor step, batch 2, counted with torch's
FlopCounterMode: small 0.033 vs 0.014 TFLOP (2.3x; wall time on one CPU thread 0.52 vs 0.21 s,
2.4x), so 30 diffusion steps ~ 75 regressor steps; paper 15.9 vs 1.5 TFLOP (10.5x), so 20000
~ 200000. The whole DEMIST (autoencoders, alignment, backbone) costs several times more."""

METHODS = ("demist", "ftldm", "controlnet", "lora")
"""Diffusion variants trained per fold: DEMIST and the paper's Table 1 ablations."""

METHOD_ABLATION = {"demist": "full", "ftldm": "ft-ldm", "controlnet": "controlnet", "lora": "lora"}
"""Model-config ablation name of each method."""


@dataclass
class TrainingRecipe:
    """Everything about *how* a preset is trained (the networks live in ModelConfig)."""

    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    """Training patch size in voxels."""
    batch_size: int = 2
    """Patches per step and process."""
    steps: dict[str, int] = field(
        default_factory=lambda: {"ae": 20000, "align": 5000, "backbone": 40000, "diffusion": 20000,
                                 "regressor": REGRESSOR_STEPS["paper"]}
    )
    """Optimisation steps per stage (``--max-steps`` caps them)."""
    steps_per_epoch: int = 500
    """Steps between checkpoints: an epoch is the most a kill can lose."""
    learning_rate: dict[str, float] = field(
        default_factory=lambda: {"ae": 1e-4, "align": 1e-4, "backbone": 1e-4, "diffusion": 1e-4,
                                 "regressor": 1e-4}
    )
    """Adam learning rate per stage (the discriminator uses the ``ae`` rate)."""
    kl_weight: float = 1e-6
    edge_weight: float = 1.0
    """Sobel edge term, autoencoders and diffusion alike (the Sobel operator is normalized to
    unit slope, so on [0, 1] images the term is of the order of the L1 term)."""
    adversarial_weight: float = 0.01
    adversarial_start: float = 0.5
    """Fraction of the ``ae`` steps after which the patch discriminator joins."""
    align_weight: float = 0.1
    """Latent alignment term of stage 2."""
    align_decoded_weight: float = 1.0
    """``align`` stage: L1 between the PSR map decoded from z_c (frozen PSR decoder) and the
    measured one, beside the latent MSE. Latent MSE alone weighs every latent channel alike,
    including ones the decoder barely uses; on the demo cohort this term took the decoded
    conditioning latent from 20.3 to 22.0 dB in 1000 steps."""
    align_lesion_fraction: float = 0.0
    """``align`` stage: fraction of patches centred on a lesion voxel (where the cohort has
    lesion masks). Uniform patches rarely contain a lesion, and what the conditioning
    encoder must learn there (FLAIR-bright, T1w-dark means PSR loss) is the point of a PSR map.
    Off by default: 0.25 in a longer demo recipe scored worse on a fresh phantom cohort
    (demist_bids/data/models/README.md)."""
    latent_standardization: str = "channel"
    """``channel``: the align stage measures per-channel mean and std of the PSR latent and both
    latents are standardized per channel (``ModelConfig.latent_shift``); ``scalar``: one scale
    factor per latent, as the BraTS bundle (used whenever a pretrained backbone is given, since
    that backbone learned the scalar-scaled latents)."""
    gate_lr_multiplier: float = 1.0
    """``diffusion`` stage: the streams' zero-initialised joins (``DemistModel.gate_parameters``)
    learn at this multiple of the stage's rate. The backbone and diffusion stages decay their
    rate on a cosine, as the autoencoder stages do."""
    lora_b_lr_multiplier: float = 1.0
    """``diffusion`` stage: the adaptive stream's zero-initialised LoRA factors B
    (``DemistModel.lora_up_parameters``) learn at this multiple of the stage's rate, as LoRA+
    (Hayou et al., 2024) trains B faster than A. 1: at the rate of every other stream weight,
    as the shipped models were trained. At 10 (the gates' rate) the full model stayed level
    with ControlNet on the development cohort (benchmarks/README, session 19), so no recipe sets it."""
    high_noise_bias: float = 0.0
    """Backbone and streams draw timestep t with density ~ ``1 + bias * t / T`` (0: uniform)."""
    timestep_band: list[int] = field(default_factory=list)
    """``[lo, hi]``: backbone and streams draw t in ``lo <= t < hi`` ``timestep_band_density`` times as
    often as any other t (:func:`~demist_bids.training.stages.sample_timesteps`). Aimed at the middle
    noise where, on the forward process's states, session 32's streams decoded their clean estimate 2-4
    dB below their own estimate at t = 999. ``[500, 800]`` at 3 on session 31's 1250-step recipe lifted
    those estimates by 0.4-0.5 dB (t = 749 and 499; t = 249 fell 0.6 dB) without closing the dip, and
    the paper's sampler on development scans 1-6 to 22.55 dB, level-free 23.37, lesion-level AUC 0.963
    (uniform: 22.42, 23.29, 0.970; no diffusion 22.65, 23.66, 0.973), within one training seed's spread
    (0.65 dB on scans 1-3; benchmarks/README, session 33).
    Empty: uniform, as every shipped model was trained."""
    timestep_band_density: float = 1.0
    """How much denser ``timestep_band`` is drawn (1: not at all; at least 1)."""
    edge_timestep_max: int = 500
    """The diffusion edge term only counts for t below this (z0_hat is noise above)."""
    diffusion_decoded_weight: float = 0.0
    """``diffusion`` stage: L1 between the PSR map decoded from the predicted clean latent z0_hat
    (frozen PSR decoder) and the measured one, at every timestep: what ``align_decoded_weight``
    asks of z_c, asked of the estimates a pure-noise chain is built from. The noise loss weighs
    latent channels alike, whatever the decoder makes of them. 0: the paper's loss. At 1.0 it
    lifted ControlNet's pure-noise DDIM-20 (mean of 4) by +0.70 to +2.81 dB over four paired
    training seeds on two development scans; on the demo model's own streams it brought that row
    level with decoding z_c on a test cohort (seed 257), with a lesion AUC 0.007 lower. No shipped
    model sets it yet (benchmarks/README, sessions 24-25)."""
    diffusion_decoded_high_noise_weight: float = 0.0
    """``diffusion`` stage: an extra weight of the decoded term that grows linearly with the patch's
    timestep, ``diffusion_decoded_weight + this * t / (T - 1)``: the clean-latent estimate at high
    noise is what a pure-noise chain's mean inherits, and there the noise loss alone lets it stay a
    weaker regressor than decoding z_c (session 28). 0: a constant weight, as every shipped model
    was trained. On the demo model's own streams (fraction 0.25), weight 1 plus 3 left the paper's
    row's level-free PSNR where weight 1 alone left it on development scans 1-6 (23.21 against
    23.27 dB; no diffusion 23.66) and pulled its level 0.012 PSR below no diffusion's (PSNR 21.93
    against 22.80); 0 plus 2 was worse level-free (benchmarks/README, session 29)."""
    diffusion_lesion_fraction: float = 0.0
    """``diffusion`` stage: fraction of patches centred on a lesion voxel (where the cohort has
    lesion masks), as ``align_lesion_fraction`` does for the align stage. Uniform patches rarely
    hold a lesion, so the streams learn to steer the prior mostly through normal tissue, and a
    pure-noise chain can drift a lesion's PSR towards the surrounding white matter's.
    0: uniform, as every shipped model was trained. With ``diffusion_decoded_weight`` 1 on the demo
    model's own streams, 0.25 lifted the paper's row (pure noise, DDIM-20, mean of 4) from +0.25 to
    +1.04 dB above decoding z_c on development scans 1-3, lesion-level AUC 0.990 -> 0.992 (no
    diffusion: 0.995). On a test cohort (seed 263) that row lay +0.75 dB above decoding z_c with a
    lesion-level AUC 0.003 below it, a gain that is a shift of each scan's mean level: with each
    scan's own offset taken out that row lies 0.26 dB below decoding z_c (session 27). No shipped
    model sets it (benchmarks/README, sessions 26-27)."""
    diffusion_decoded_lesion_weight: float = 0.0
    """``diffusion`` stage: weight of an L1 of the decoded estimate that ``diffusion_decoded_weight``
    scores (on its own or beside it), averaged over the batch's lesion voxels only (lesion masks,
    where the cohort has them), so lesions weigh as much as the rest of the patch rather than under
    1 % of it. Aimed at the lesion-level AUC, which lesion-centred patches alone left 0.003 below
    decoding z_c (session 26).
    At 1 (fraction 0.25) it lifted the paper's row's lesion AUC above decoding z_c's on development
    scans 1-6 (0.977 against 0.973) at about 1 dB of PSNR; on a test cohort (seed 281) it lay 0.006
    below (benchmarks/README, session 27). 0: off, as every shipped model was trained."""
    cond_encoder_in_diffusion: bool = False
    """Also fine-tune the conditioning encoder in stage 2 (then the alignment term has gradients)."""
    diffusion_cond_decoded_weight: float = 0.0
    """``diffusion`` stage, with ``cond_encoder_in_diffusion``: weight of the ``align`` stage's
    decoded L1 on z_c itself (the frozen PSR decoder's map of z_c against the measured one), kept
    while E_cond trains with the streams. Without it the streams' losses alone moved z_c away from
    a latent the decoder reads: decoding z_c fell 3.1 dB on development scans 1-3 (session 29).
    At 1 on the demo model's own streams (1250 steps, decoded weight 1, fraction 0.25), decoding
    z_c beat the shipped align-stage encoder's on development scans 1-6 (22.96 against 22.65 dB;
    each scan's level taken out 24.18 against 23.66) and the paper's row (pure noise, DDIM-20,
    mean of 4) reached 22.99 dB, yet stayed 0.55 dB below its own z_c level-free, with a lesion
    AUC 0.015 lower (benchmarks/README, session 30).
    0: off, as every shipped model was trained; it needs ``cond_encoder_in_diffusion``."""
    diffusion_input_perturbation: float = 0.0
    """``diffusion`` stage: gamma of input perturbation (Ning et al. 2023, DDPM-IP): the network sees
    ``z_t + sqrt(1 - abar_t) * gamma * xi`` (xi fresh Gaussian noise) while its target stays the
    unperturbed one, so it learns to read states a little off the forward process, as a sampler's
    own states are (exposure bias). The paper's value is 0.1. At 0.1 on session 28's 1250-step
    recipe the paper's sampler (pure noise, DDIM-20, mean of 4) scored within 0.1 dB of the same
    recipe without it on each of development scans 1-6, and on development scans 1-2 that recipe's
    chains showed no exposure penalty to correct: their own clean estimates decoded above those from
    the forward process's states at the same t (benchmarks/README, sessions 31-32). 0: off, as every
    shipped model was trained."""
    condition_skip: bool = False
    """Build the streams with a learned skip from z_c into the denoiser's clean estimate
    (``StreamsConfig.condition_skip``, :mod:`demist_bids.models.condition_skip`) and train it in
    the ``diffusion`` stage with the gates' rate. Not the paper's denoiser. On session 28's 1250-step
    recipe it lowered the paper's sampler (pure noise, DDIM-20, mean of 4) by 1.7 dB on development
    scans 1-3, to 1.0 dB below decoding z_c (benchmarks/README, session 31). False: off, as every
    shipped model was trained."""
    terminal_snr: float | None = None
    """Train (and sample) on the noise schedule rescaled to this SNR at t = T
    (``ScheduleConfig.terminal_snr``, :mod:`demist_bids.models.noise_schedule`) instead of the
    bundle's, whose z_T keeps sqrt(abar_T) = 0.012 of the clean latent, a signal the sampler's pure
    noise never has. Not the paper's schedule. At 1e-6 on session 28's 1250-step recipe, the paper's
    sampler (pure noise, DDIM-20, mean of 4) on development scans 1-3 scored 23.34 dB level-free with
    the demo backbone frozen and 23.01 with it fine-tuned 750 steps on the schedule, against 23.26 on
    the bundle's schedule and 23.50 for no diffusion (benchmarks/README, session 32). Unset: the
    bundle's, as every shipped model was trained. Not with a BraTS backbone, which was trained on the
    bundle's schedule."""
    ema_decay: float = 0.0
    """Backbone and ``diffusion`` stages: the stage ends with an exponential moving average of the
    weights it trains instead of its last step's (:mod:`~demist_bids.training.weight_average`; this is
    the average's largest decay, reached after its warm-up). 0: the last step's weights, as every
    shipped model was trained. At 0.999 on session 33's recipe X (1250 streams steps, cosine rate)
    the paper's sampler on development scans 1-3 moved by +0.04 and +0.07 dB for training seeds 0 and 1
    (23.14 and 22.51 dB), and the seeds stayed 0.63 dB apart (0.66 without it): what a seed decides
    there is not the last steps' noise (benchmarks/README, session 34). Not measured with a constant
    rate or on the backbone."""
    scale_factor_batches: int = 16
    """Batches of patches the latent scale factors are computed over."""
    anchor_batches: int = 8
    """After the ``diffusion`` stage: batches of un-augmented patches the blend of the clean-latent
    estimate towards z_c is fitted on (``ModelConfig.anchor``, :mod:`demist_bids.training.anchor`);
    0 fits none (the paper's sampler unchanged)."""
    anchor_steps: int = 0
    """0: fit the blend on the forward process at fixed knots; N: along DDIM-N chains from pure
    noise, the sampler the model will use (:func:`~demist_bids.training.anchor.fit_anchor`)."""
    distill: dict[str, float] = field(
        default_factory=lambda: {"teacher_steps": 64, "student_steps": 4, "iterations": 2000,
                                 "learning_rate": 5e-5}
    )
    """``train --stage distill`` (:class:`~demist_bids.training.distill.DistillSettings`): the
    teacher's DDIM step count the first round imitates, the student's, optimisation steps per
    halving round and the streams' Adam rate."""
    grad_clip: float = 1.0
    regressor_features: list[int] = field(default_factory=lambda: [32, 32, 64, 128, 256, 32])
    """Widths of the ``unet-regressor`` baseline (MONAI BasicUNet; :mod:`demist_bids.models.regressor`)."""
    eval_sampler: str = "ddim"
    """Sampler of the held-out evaluation; exported models carry it as their default."""
    eval_steps: int = 50
    eval_samples: int = 1
    eval_start: float = 1.0
    """Where on the noise schedule evaluation sampling starts (1: pure noise, the paper;
    below 1: the aligned conditioning latent noised to that level, see SamplingConfig.start)."""
    eval_precision: str = "auto"
    """``auto``, ``bf16`` or ``fp32`` (SamplingConfig.precision): bf16 halves a 2-core CPU's
    synthesis time where the CPU computes bf16 natively, and is ignored where it does not."""

    def __post_init__(self) -> None:
        if self.timestep_band:
            band = self.timestep_band
            if len(band) != 2 or not 0 <= band[0] < band[1] or self.timestep_band_density < 1.0:
                raise ValueError(f"timestep_band must be [lo, hi] with 0 <= lo < hi and timestep_band_density "
                                 f"at least 1, not {band} and {self.timestep_band_density}")
            if self.high_noise_bias > 0:
                raise ValueError("timestep_band and high_noise_bias are two densities of t: set one")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be 0 (off) or below 1, not {self.ema_decay}")
        if self.diffusion_cond_decoded_weight > 0 and not self.cond_encoder_in_diffusion:
            raise ValueError("diffusion_cond_decoded_weight needs cond_encoder_in_diffusion = true "
                             "(with a frozen conditioning encoder the term has no gradient)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recipe(preset: str) -> TrainingRecipe:
    """The recipe of ``preset`` (``paper`` or ``small``)."""
    if preset == "paper":
        return TrainingRecipe()
    if preset == "small":
        return TrainingRecipe(
            patch_size=[32, 32, 32],
            batch_size=2,
            # A 6-subject, 2-fold run of full-size phantom heads (2 folds + the final
            # model, 4 methods per fold) took 27 min on 2 CPU cores: 4 min
            # preprocessing, 2 min training per fold, 17 min evaluating 24 held-out
            # syntheses of ~40 s, 1 min for the final model. The demo model's recipe
            # (scripts/make_demo_model.sh) trains ~10x longer.
            steps={"ae": 50, "align": 30, "backbone": 100, "diffusion": 30,
                   "regressor": REGRESSOR_STEPS["small"]},
            steps_per_epoch=25,
            learning_rate={"ae": 1e-3, "align": 5e-4, "backbone": 5e-4, "diffusion": 5e-4,
                           "regressor": 1e-3},
            regressor_features=[16, 16, 32, 64, 128, 16],
            adversarial_start=0.6,
            scale_factor_batches=8,
            distill={"teacher_steps": 32, "student_steps": 4, "iterations": 150, "learning_rate": 1e-4},
            # The sampler the benchmark validated on the small-preset demo model (2 DDIM
            # steps from the conditioning latent noised to 0.15: within 0.3 dB of 1000-step
            # DDPM). From pure noise, 10 steps on a whole 2x latent cost ~15 min per
            # held-out scan and method on 2 cores.
            eval_sampler="ddim",
            eval_steps=2,
            eval_start=0.15,
            eval_precision="bf16",
        )
    raise ValueError(f"unknown preset {preset!r}")


def load_recipe(preset: str, path=None) -> TrainingRecipe:
    """The preset's recipe with the entries of a TOML file (``--train-recipe``) laid over it.

    Tables (``steps``, ``learning_rate``) are merged key by key; unknown keys
    are an error, so a typo cannot silently train with defaults.
    """
    import tomllib
    from pathlib import Path

    base = recipe(preset)
    if path is None:
        return base
    with open(Path(path), "rb") as fh:
        overrides = tomllib.load(fh)
    data = base.to_dict()
    unknown = set(overrides) - set(data)
    if unknown:
        raise ValueError(f"unknown training recipe keys in {path}: {sorted(unknown)}")
    for key, value in overrides.items():
        if isinstance(data[key], dict):
            extra = set(value) - set(data[key])
            if extra:
                raise ValueError(f"unknown {key} entries in {path}: {sorted(extra)}")
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TrainingRecipe(**data)


def capped(steps: int, max_steps: int) -> int:
    """``steps`` limited by ``--max-steps`` (0: no limit)."""
    return min(steps, max_steps) if max_steps > 0 else steps
