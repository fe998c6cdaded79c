"""The architecture and provenance of one DEMIST model, as plain JSON-able data.

A :class:`ModelConfig` is everything needed to rebuild the networks (then fill
them from safetensors) and to use them correctly: latent scale factors, the
cohort-wide PSR scale, the noise schedule, the sampler the model was validated
with and the preprocessing it expects. It is written beside the weights as
``config.json`` (see :mod:`demist_bids.models.io`). This module imports only the
standard library, so the CLI can read a model card without loading torch.

Two presets exist:

``paper``
    The published sizes: the MONAI BraTS bundle autoencoder (64/128/256, 2 res
    blocks, no attention) and its diffusion UNet (256/256/512, attention at the
    two deeper levels, 64-channel heads, 2 res blocks), 21 M + 189 M parameters.
``small``
    A network that trains and samples a whole brain on a 2-core CPU:
    autoencoders 16/32 with one res block per level and a 4-channel latent at
    2x downsampling, UNet 32/64/64 with one res block and attention only at the
    deepest level (latent attention over a whole-brain latent at a finer level
    would cost more than all convolutions). The latent is 2x, not the paper's
    4x, because these small autoencoders cannot carry lesion detail through a
    4x latent. Trained alike (800 steps, ``benchmarks/autoencoder_ceiling.py``)
    on a phantom cohort, the PSR autoencoder's own reconstruction of a fresh
    cohort scored 19.9 dB / SSIM 0.85 / lesion AUC 0.953 at 4x and 24.2 dB /
    0.95 / 0.978 at 2x, against 21.2 dB / 0.94 / 0.977 for the voxel-wise
    linear baseline; whatever a latent cannot hold, no diffusion model can
    synthesize. The UNet then costs about 3x more per step, still small next to
    the autoencoders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

PresetName = Literal["paper", "small"]

ABLATIONS: dict[str, dict[str, bool]] = {
    "full": {"semantic": True, "spatial": True, "adaptive": True},
    "lora": {"semantic": True, "spatial": False, "adaptive": True},
    "controlnet": {"semantic": True, "spatial": True, "adaptive": False},
    "ft-ldm": {"semantic": True, "spatial": False, "adaptive": False},
    "none": {"semantic": True, "spatial": False, "adaptive": False},
}
"""Paper Table 1 rows as stream switches.

The FT-LDM baseline still needs *some* path for the condition, so it keeps the
semantic (cross-attention) stream, the usual LDM conditioning; ``none`` is an
alias of ``ft-ldm`` (no DEMIST-specific stream). ``controlnet`` and ``lora``
add one stream each, ``full`` is DEMIST.
"""


@dataclass
class _LevelSizes:
    """Sizes shared by the autoencoders and the UNet: per-level channels, res blocks, norms."""

    channels: list[int] = field(default_factory=list)
    """Channels per level; each level after the first halves the size."""
    num_res_blocks: int = 2
    """Residual blocks per level."""
    norm_num_groups: int = 32
    """GroupNorm groups (must divide every channel count)."""
    norm_eps: float = 1e-6
    """GroupNorm epsilon."""

    @property
    def downsampling(self) -> int:
        """Input voxels per coarsest-level voxel along each axis."""
        return 2 ** (len(self.channels) - 1)


@dataclass
class AutoencoderConfig(_LevelSizes):
    """MONAI ``AutoencoderKL`` arguments shared by the PSR and conditioning autoencoders."""

    channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    latent_channels: int = 8
    """Channels of the latent (L in the paper)."""


@dataclass
class UNetConfig(_LevelSizes):
    """MONAI ``DiffusionModelUNet`` arguments of the frozen backbone."""

    channels: list[int] = field(default_factory=lambda: [256, 256, 512])
    attention_levels: list[bool] = field(default_factory=lambda: [False, True, True])
    """Levels with self-attention; the semantic cross-attention sits beside these."""
    num_head_channels: list[int] = field(default_factory=lambda: [0, 64, 64])
    """Channels per attention head per level (ignored where there is no attention)."""


@dataclass
class StreamsConfig:
    """The three trainable conditioning streams and their sizes (the paper gives none)."""

    semantic: bool = True
    """Cross-attention from UNet features to pooled condition tokens."""
    spatial: bool = True
    """ControlNet copy of the encoder fed the conditioning latent."""
    adaptive: bool = True
    """LoRA on Q, K, V (peft) and O (added low-rank delta) of every self-attention."""
    hint_layers: int = 0
    """3x3x3 convolutions of the ControlNet's hint path before its zero gate (0: the gate alone)."""
    token_grid: list[int] = field(default_factory=lambda: [4, 4, 4])
    """Pooling grid of the semantic tokens (N = product) in the paper's layout (``token_stride`` 0)."""
    token_stride: int = 0
    """0: the paper's layout (tokens pooled to ``token_grid``, absolute positions, every query reads
    every token). s > 0: one token per s^3 latent voxels, each query reading the 3x3x3 tokens around
    it with a learned distance bias, so the semantic stream can say *where* (see
    ``demist_bids.models.semantic``). On the development phantom (benchmarks/README, session 13) s = 4
    lifted the semantic-only model from noise (6.8 dB) to 13.5 dB from pure noise but lowered the
    full model by 2 dB, so the presets keep 0."""
    token_dim: int = 256
    """Width d of the semantic tokens."""
    cross_attention_heads: int = 4
    """Heads of each semantic cross-attention."""
    lora_rank: int = 8
    """LoRA rank r."""
    lora_alpha: float = 8.0
    """LoRA alpha; the update is scaled by alpha / r."""
    condition_skip: bool = False
    """Not in the paper: blend the denoiser's clean-latent estimate towards z_c by weights learned
    with the streams, per noise level and channel (:mod:`demist_bids.models.condition_skip`; the
    post-hoc :class:`AnchorConfig` trained into the denoiser). Only with at least one stream on.
    No shipped model uses it: trained on the forward process's states it lowered the pure-noise
    chain's map on development scans (benchmarks/README, session 31)."""

    def ablation(self) -> str:
        """The Table 1 row name of these switches (``custom`` if none matches)."""
        switches = {"semantic": self.semantic, "spatial": self.spatial, "adaptive": self.adaptive}
        for name, value in ABLATIONS.items():
            if value == switches:
                return name
        return "custom"


@dataclass
class ScheduleConfig:
    """The training noise schedule (BraTS bundle values)."""

    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "epsilon"
    """What the backbone's output means: ``epsilon`` (the BraTS bundle) or ``v_prediction``
    (v = sqrt(abar) eps - sqrt(1 - abar) z_0, Salimans & Ho 2022). Whatever the network
    predicts, :meth:`DemistModel.predict_noise` returns epsilon, so samplers never need to know.
    An epsilon network must be precise to ~1e-4 at high noise, where an error is amplified
    sqrt((1 - abar) / abar) (84x at t = 999) into the clean estimate, and there the condition
    changes its output by only sqrt(abar): a v network predicts about -z_0 at high noise, so
    both the prior's and the condition's signal are of order one at every timestep."""
    terminal_snr: float | None = None
    """None: ``schedule`` as named. A value (> 0): that schedule rescaled so the SNR abar / (1 - abar)
    at t = T is this value (Lin et al. 2024; :mod:`demist_bids.models.noise_schedule`), so z_T
    carries next to nothing of the clean latent, as the sampler's pure noise does. The bundle's
    schedule leaves 1.4e-4. Needs ``v_prediction``. Not in the paper; no shipped model sets it."""

    def __post_init__(self) -> None:
        if self.terminal_snr is None:
            return
        if not self.terminal_snr > 0:
            raise ValueError(f"schedule.terminal_snr must be > 0 or None, got {self.terminal_snr}")
        if self.prediction_type != "v_prediction":  # eps errors reach the clean estimate x sqrt(1 / SNR)
            raise ValueError("schedule.terminal_snr needs prediction_type 'v_prediction'")


UNCONDITIONAL_BRANCHES = ("backbone", "adapted")
"""What :attr:`SamplingConfig.unconditional` may name."""


WINDOW_BLENDS = ("gaussian", "constant")
"""The weights an autoencoder window blend may take (:attr:`SamplingConfig.autoencoder_blend`, ``decoder_blend``)."""


@dataclass
class SamplingConfig:
    """The sampler this model is recommended with (updated once benchmarked)."""

    sampler: str = "ddim"
    """``ddpm``, ``ddim``, ``dpm++``, or ``distilled`` (the student in the ``student/`` subdirectory)."""
    steps: int = 50
    """Number of sampling steps."""
    validated: bool = False
    """True once ``benchmarks/sampler_speed.py --write-choice`` found this option within 0.3 dB
    (PSNR against the true PSR) of its DDPM reference; which reference that was (the paper's
    DDPM-1000 from pure noise, or DDPM over the same timesteps from the same start) is recorded
    in ``card["sampler_benchmark"]``."""
    distilled_steps: int = 0
    """On a distilled student: the DDIM step count its streams were distilled for (0: not a student)."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` (also on CPUs that compute bf16
    natively, AVX512-BF16/AMX; fp32 on the others) or ``fp32``."""
    start: float = 1.0
    """Fraction of the noise schedule the reverse process starts from. 1.0 starts from pure
    noise (the paper). Below 1 it starts from the aligned conditioning latent z_c noised to
    that level (SDEdit): the alignment stage trains z_c to approximate z_y, so z_c is a prior
    for the PSR latent and the model only has to refine it."""
    guidance: float = 1.0
    """Classifier-free guidance scale, with :attr:`unconditional` as the unconditional branch:
    eps = eps_u + guidance * (eps_model - eps_u). 1 is the model alone (one network evaluation
    per step); above 1 costs a second, condition-free evaluation per step."""
    guidance_interval: list[int] | None = None
    """``[lo, hi]``: guidance applies only at timesteps ``lo <= t < hi``; elsewhere the model alone
    (one network evaluation). None: at every step. Guidance limited to an interval of noise levels
    is Kynkaanniemi et al. (NeurIPS 2024); here it asks whether guidance's lesion contrast and its pull
    on the map's level come from different noise levels. On development scans 1-3 (recipe Z, DDIM-20
    from pure noise, mean of 4) guidance 2 at t < 500 only kept guidance 1.5's level-free PSNR with
    guidance 2's lesion AUC, and guidance 2 at t >= 500 only lay 0.48 dB below no guidance; on all six
    scans the low-noise row stayed 0.011 lesion AUC below decoding z_c (recipe X at guidance 1.5
    everywhere: 0.010) (benchmarks/README, session 34). No shipped model sets it."""
    noise_scale: float = 1.0
    """Each noise estimate (after guidance, before any blend towards z_c) is divided by this before
    the scheduler step: the epsilon scaling of Ning et al. (ICLR 2024) against exposure bias, the
    network seeing its own partly denoised samples instead of forward-noised data. 1 is the
    paper's sampler. A development lever no model uses: on the development cohort 0.98-1.04 moved
    the pure-noise level by about 0.00013 PSR per 0.01 (benchmarks/README, session 22)."""
    unconditional: str = "backbone"
    """The guidance's unconditional branch: ``backbone``, the frozen backbone with its LoRA
    adapters off (the prior as it was trained), or ``adapted``, the backbone with its adapters
    and no condition, so that guidance extrapolates what the condition changes and not what the
    adaptive stream changed in the prior. The same for a model without adapters."""
    autoencoder_overlap: float = 0.5
    """Overlap of the Gaussian-blended windows the autoencoders run in (0 <= overlap < 1).
    More overlap keeps every voxel further from a window edge, at (1 - overlap)^-3 windows:
    on the 2x demo model, 6 seed-23 scans scored 21.3 / 22.7 / 23.0 / 23.2 dB at 0.25 / 0.5 /
    0.625 / 0.75 for 0.6x / 1x / 1.7x / 4.5x the synthesis time."""
    autoencoder_blend: str = "gaussian"
    """How the overlapping autoencoder windows are blended: ``gaussian`` (MONAI's weights, each
    window's centre counts most) or ``constant`` (every window alike). On latents cut from a whole
    scan the PSR decoder's window centres read high: with ``gaussian`` at overlap 0.5 the shipped
    autoencoders decode a measured map's own latent about +0.009 PSR above it inside the brain,
    against +0.001 to +0.002 on single training patches (benchmarks/autoencoder_level.py, session 22).
    The encoding passes use it; the decoder too unless :attr:`decoder_blend` says otherwise."""
    decoder_blend: str | None = None
    """The PSR decoder's window weights when they differ from the encoders': ``gaussian`` or ``constant``;
    None takes :attr:`autoencoder_blend`. Constant decoding takes the ceiling's level offset away
    (development scans: +0.0003 PSR against +0.009) but lowered the shipped student's 6 development
    scans from 22.73 to 20.97 dB at overlap 0.5 and to 22.58 dB at 0.75, no diffusion alike
    (benchmarks/README, session 23): no model uses it."""


@dataclass
class AnchorConfig:
    """How far the denoiser's clean-latent estimate is pulled towards z_c, per noise level (issue 16).

    At timestep t the sampler uses ``x0 = (1 - a_c(t)) * x0_model + a_c(t) * z_c`` per latent
    channel c, with ``a`` interpolated linearly between :attr:`timesteps`. Equivalently the
    noise estimate is blended with ``(z_t - sqrt(abar) z_c) / sqrt(1 - abar)``. The weights are
    the least-squares blend of the two estimates of z_y on training patches noised to each
    knot (:func:`demist_bids.training.anchor.fit_anchor`), clipped to [0, 1]: where the
    network's estimate is worse than the aligned encoder's (high noise), ``a`` is near 1; where
    the noisy latent already tells the network more (low noise), near 0. Empty: no blend (the
    paper's sampler).
    """

    timesteps: list[int] = field(default_factory=list)
    """Knots on the training schedule, increasing."""
    weights: list[list[float]] = field(default_factory=list)
    """``weights[k][c]``: the blend towards z_c at knot k for latent channel c, in [0, 1]."""
    guidance: float = 1.0
    """The classifier-free guidance scale the weights were fitted with."""
    patches: int = 0
    """Training patches they were fitted on."""
    steps: int = 0
    """0: fitted on training patches noised by the forward process at each knot; N: fitted along
    DDIM-N chains from pure noise on the patches (each step on the states the blended earlier
    steps produced; the knots are that sampler's timesteps)."""


@dataclass
class ModelConfig:
    """Everything to rebuild and correctly use one DEMIST model."""

    preset: str = "paper"
    """Preset the sizes came from (``paper``, ``small`` or ``custom``)."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    """The fitted blend of the clean-latent estimate towards z_c (empty: none)."""
    psr_latent_scale: float = 1.0
    """Multiplies the PSR posterior mean so latents have unit variance (computed over many patches)."""
    cond_latent_scale: float = 1.0
    """Same for the conditioning latent."""
    latent_shift: list[float] = field(default_factory=list)
    """Per-channel mean of the PSR posterior means (empty: scalar scaling only). With
    :attr:`latent_channel_scale`, both latents are standardized per channel with the PSR
    latent's statistics: z = (mu - shift) * scale. E_cond is aligned to E_PSR's raw latent,
    so one standardization keeps z_c comparable to z_y. The diffusion noise is N(0, 1) per
    channel; a channel with a tenth of the variance of another is drowned ten times sooner."""
    latent_channel_scale: list[float] = field(default_factory=list)
    """Per-channel ``1 / std`` of the PSR posterior means (see :attr:`latent_shift`)."""
    psr_scale: float = 0.3
    """Cohort-wide PSR value mapped to 1.0 (psr01 = PSR / psr_scale); never per subject."""
    input_channels: list[str] = field(default_factory=lambda: ["T1w", "FLAIR"])
    """Order of the conditioning channels."""
    preprocessing: str = (
        "T1w and FLAIR co-registered, RAS, 1 mm isotropic, skull-stripped and each scaled to "
        "[0, 1] by its own 0-99.5th percentile inside the brain mask; background 0."
    )
    """What the inputs must look like (recorded into the derivative sidecars)."""
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    """Training patch size; also the default sliding-window size in image voxels."""
    card: dict[str, Any] = field(default_factory=dict)
    """Model card: training data summary, folds, metrics, losses, intended use."""
    demist_version: str = ""
    """demist version that wrote this config."""

    # -- derived ------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Image sizes must be a multiple of this (AE downsampling x UNet downsampling)."""
        return self.autoencoder.downsampling * self.unet.downsampling

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise, missing keys take defaults."""
        sections = {
            "autoencoder": AutoencoderConfig,
            "unet": UNetConfig,
            "streams": StreamsConfig,
            "schedule": ScheduleConfig,
            "sampling": SamplingConfig,
            "anchor": AnchorConfig,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            section = sections.get(key)
            kwargs[key] = _section_from_dict(section, value) if section else value
        return cls(**kwargs)


def _section_from_dict(section: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(section)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {section.__name__} keys: {sorted(unknown)}")
    return section(**data)


def _small() -> ModelConfig:
    return ModelConfig(
        preset="small",
        autoencoder=AutoencoderConfig(channels=[16, 32], num_res_blocks=1, norm_num_groups=8, latent_channels=4),
        unet=UNetConfig(
            channels=[32, 64, 64],
            attention_levels=[False, False, True],
            num_head_channels=[0, 0, 32],
            num_res_blocks=1,
            norm_num_groups=8,
        ),
        streams=StreamsConfig(token_dim=64, cross_attention_heads=2, lora_rank=4, lora_alpha=4.0),
        # Its backbone is trained here, not taken from the BraTS bundle, so it can predict v.
        schedule=ScheduleConfig(prediction_type="v_prediction"),
        sampling=SamplingConfig(sampler="dpm++", steps=10),
        patch_size=[64, 64, 64],
    )


def preset(name: PresetName, *, ablation: str | None = None, **overrides: Any) -> ModelConfig:
    """Build a configuration from a named preset.

    Args:
        name: ``paper`` or ``small``.
        ablation: optional Table 1 row (``full``, ``lora``, ``controlnet``,
            ``ft-ldm``/``none``) setting the three stream switches.
        **overrides: top-level :class:`ModelConfig` fields; section fields may be
            given as dictionaries (``streams={"lora_rank": 16}``) and are merged.

    Returns:
        A new :class:`ModelConfig`.
    """
    from demist_bids import __version__

    if name == "paper":
        config = ModelConfig(preset="paper")
    elif name == "small":
        config = _small()
    else:
        raise ValueError(f"unknown preset {name!r}; expected 'paper' or 'small'")
    config.demist_version = __version__
    if ablation is not None:
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; expected one of {sorted(ABLATIONS)}")
        config.streams = dataclasses.replace(config.streams, **ABLATIONS[ablation])
    data = config.to_dict()
    for key, value in overrides.items():
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if isinstance(data.get(key), dict) and isinstance(value, dict) and key != "card":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return ModelConfig.from_dict(data)
