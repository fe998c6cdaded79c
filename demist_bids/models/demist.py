"""DEMIST: two autoencoders, a frozen diffusion backbone and three conditioning streams.

The noise prediction is ``eps_theta(z_t, t; C(z_c))`` in the PSR latent, with
the backbone's weights frozen and only the streams trained (semantic
cross-attention, spatial ControlNet, adaptive LoRA). Each stream can be switched
off in :class:`~demist_bids.models.config.StreamsConfig` for the paper's
ablations; at initialisation every stream adds exactly zero, so the model equals
its backbone.

Training stages the API supports (the loops live in ``demist_bids.training``):

1. autoencoders alone: ``model.psr_autoencoder`` / ``model.cond_autoencoder``
   (``requires_grad_(True)`` them; they are frozen by default);
2. an unconditional backbone where no pretrained one exists:
   ``unfreeze_backbone()``, train :meth:`DemistModel.backbone_noise`, then
   ``freeze_backbone()`` and ``sync_controlnet_from_backbone()``;
3. the streams: optimise :meth:`DemistModel.trainable_stream_parameters` with
   :meth:`DemistModel.predict_noise`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from monai.networks.nets import AutoencoderKL, ControlNet, DiffusionModelUNet
from torch import nn

from demist_bids.models.autoencoders import build_autoencoder, posterior_mean
from demist_bids.models.condition_skip import ConditionSkip
from demist_bids.models.config import ModelConfig
from demist_bids.models.controlnet import build_controlnet, copy_encoder_weights
from demist_bids.models.lora import LowRankDelta, attach_lora, lora_parameters, lora_up_parameters
from demist_bids.models.semantic import SemanticStream
from demist_bids.models.unet import build_backbone, is_adapter_key, plain_state_dict

LOGGER = logging.getLogger("demist.models")

__all__ = ["DemistModel", "build_model"]


class DemistModel(nn.Module):
    """The DEMIST networks for one configuration.

    Args:
        config: architecture, streams and scale factors.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        latent = config.autoencoder.latent_channels
        self.psr_autoencoder: AutoencoderKL = build_autoencoder(config.autoencoder, 1)
        self.cond_autoencoder: AutoencoderKL = build_autoencoder(config.autoencoder, len(config.input_channels))
        self.backbone: DiffusionModelUNet = build_backbone(config.unet, latent)
        streams = config.streams
        self.semantic: SemanticStream | None = None
        if streams.semantic:
            self.semantic = SemanticStream(
                self.backbone,
                latent,
                streams.token_dim,
                tuple(streams.token_grid),
                streams.cross_attention_heads,
                config.unet.norm_num_groups,
                config.unet.norm_eps,
                streams.token_stride,
            )
        self.controlnet: ControlNet | None = None
        if streams.spatial:
            self.controlnet = build_controlnet(config.unet, latent, streams.hint_layers)
        if streams.adaptive:
            attach_lora(self.backbone, streams.lora_rank, streams.lora_alpha)
        self.sync_controlnet_from_backbone()
        self.register_buffer("alphas_cumprod", _alphas_cumprod(config), persistent=False)
        self.skip: ConditionSkip | None = None
        if streams.condition_skip and any((streams.semantic, streams.spatial, streams.adaptive)):
            self.skip = ConditionSkip(self.alphas_cumprod, latent)
        self.psr_autoencoder.requires_grad_(False)
        self.cond_autoencoder.requires_grad_(False)
        self.freeze_backbone()

    # -- parameter groups ----------------------------------------------------
    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone's own weights (adapters excluded)."""
        return [p for name, p in self.backbone.named_parameters() if not is_adapter_key(name)]

    def trainable_stream_parameters(self) -> list[nn.Parameter]:
        """Parameters of the enabled streams: the only ones stage-2 training updates."""
        params: list[nn.Parameter] = []
        if self.semantic is not None:
            params += list(self.semantic.parameters())
        if self.controlnet is not None:
            params += list(self.controlnet.parameters())
        params += lora_parameters(self.backbone)
        if self.skip is not None:
            params += list(self.skip.parameters())
        return params

    def gate_parameters(self) -> list[nn.Parameter]:
        """The zero-initialised joins of the streams: the ControlNet's hint embedding and zero
        convolutions and the cross-attention output projections. They start every stream at
        exactly zero, so their learning rate decides how soon the condition is heard at all."""
        gates = []
        if self.controlnet is not None:
            gates += [p for name, p in self.controlnet.named_parameters()
                      if name.startswith(("controlnet_cond_embedding.conv.", "controlnet_down_blocks",
                                          "controlnet_mid_block"))]
        if self.semantic is not None:
            gates += [p for name, p in self.semantic.named_parameters() if ".out_proj." in name]
        if self.skip is not None:
            gates += list(self.skip.parameters())
        return gates

    def lora_up_parameters(self) -> list[nn.Parameter]:
        """The adaptive stream's zero-initialised LoRA factors B. Not among the gates: the
        shipped recipes train them at the stage's rate (``TrainingRecipe.lora_b_lr_multiplier``)."""
        return lora_up_parameters(self.backbone)

    def freeze_backbone(self) -> None:
        """Freeze the backbone weights; make the stream parameters trainable."""
        for param in self.backbone_parameters():
            param.requires_grad_(False)
        for param in self.trainable_stream_parameters():
            param.requires_grad_(True)

    def unfreeze_backbone(self) -> None:
        """Make only the backbone weights trainable (unconditional backbone stage)."""
        for param in self.trainable_stream_parameters():
            param.requires_grad_(False)
        for param in self.backbone_parameters():
            param.requires_grad_(True)

    def sync_controlnet_from_backbone(self) -> None:
        """Copy the backbone encoder into the ControlNet (after new backbone weights)."""
        if self.controlnet is not None:
            copy_encoder_weights(self.controlnet, plain_state_dict(self.backbone))

    def without_streams(self) -> "DemistModel":
        """A copy with every stream switched off: the frozen backbone and the same autoencoders.

        What the streams add is measured against this (``backbone-only`` rows,
        diagnostics); nothing is shared with ``self``.
        """
        import dataclasses

        from demist_bids.models.config import AnchorConfig

        config = dataclasses.replace(
            self.config,
            streams=dataclasses.replace(self.config.streams, semantic=False, spatial=False, adaptive=False),
            anchor=AnchorConfig(),  # the blend was fitted for the full model, not the bare backbone
        )
        bare = DemistModel(config)
        bare.psr_autoencoder.load_state_dict(self.psr_autoencoder.state_dict())
        bare.cond_autoencoder.load_state_dict(self.cond_autoencoder.state_dict())
        bare.backbone.load_state_dict(plain_state_dict(self.backbone))
        return bare.eval()

    # -- attention backend -----------------------------------------------------
    def use_sdpa(self, enabled: bool = True) -> None:
        """Switch every MONAI attention to ``torch.nn.functional.scaled_dot_product_attention``."""
        for module in self.modules():
            if hasattr(module, "use_flash_attention") and not getattr(module, "save_attn", False):
                module.use_flash_attention = enabled

    # -- latents ------------------------------------------------------------------
    def _standardize(self, mu: torch.Tensor, scalar: float) -> torch.Tensor:
        shift, scale = self._channel_statistics(mu)
        if shift is None:
            return mu * scalar
        return (mu - shift) * scale

    def _channel_statistics(self, like: torch.Tensor):
        if not self.config.latent_channel_scale:
            return None, None
        shape = (1, -1) + (1,) * (like.ndim - 2)
        shift = torch.tensor(self.config.latent_shift, dtype=like.dtype, device=like.device).view(shape)
        scale = torch.tensor(self.config.latent_channel_scale, dtype=like.dtype, device=like.device).view(shape)
        return shift, scale

    def encode_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Conditioning latent.

        Args:
            cond: B x 2 x H x W x D T1w+FLAIR in [0, 1].

        Returns:
            B x L x H/f x W/f x D/f standardized posterior mean.
        """
        return self._standardize(posterior_mean(self.cond_autoencoder, cond), self.config.cond_latent_scale)

    def encode_psr(self, psr01: torch.Tensor) -> torch.Tensor:
        """PSR latent.

        Args:
            psr01: B x 1 x H x W x D PSR divided by ``config.psr_scale``.

        Returns:
            B x L x H/f x W/f x D/f standardized posterior mean.
        """
        return self._standardize(posterior_mean(self.psr_autoencoder, psr01), self.config.psr_latent_scale)

    def decode_psr(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a standardized PSR latent.

        Args:
            z: B x L x h x w x d.

        Returns:
            B x 1 x fh x fw x fd in the [0, 1] PSR space (multiply by ``psr_scale``).
        """
        shift, scale = self._channel_statistics(z)
        raw = z / self.config.psr_latent_scale if shift is None else z / scale + shift
        return self.psr_autoencoder.decode(raw)

    # -- the network's parametrization ---------------------------------------------
    @property
    def predicts_velocity(self) -> bool:
        """True when the backbone (and so the streams) output v rather than epsilon."""
        return self.config.schedule.prediction_type == "v_prediction"

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(like.device)[t.long()].to(like.dtype)
        return abar.view(-1, *([1] * (like.ndim - 1)))

    def to_noise(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Epsilon from the network's raw output (identity for an epsilon network)."""
        if not self.predicts_velocity:
            return output
        abar = self._abar(_timesteps(t, z_t), z_t)
        return abar.sqrt() * output + (1.0 - abar).sqrt() * z_t

    def output_for_clean(self, x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The raw output (epsilon or v) whose clean-latent estimate at ``z_t`` is ``x0``."""
        abar = self._abar(_timesteps(t, z_t), z_t)
        eps = (z_t - abar.sqrt() * x0) / (1.0 - abar).sqrt()
        return abar.sqrt() * eps - (1.0 - abar).sqrt() * x0 if self.predicts_velocity else eps

    def training_target(self, z_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the raw network output is trained towards: the noise, or v."""
        if not self.predicts_velocity:
            return noise
        abar = self._abar(_timesteps(t, z_0), z_0)
        return abar.sqrt() * noise - (1.0 - abar).sqrt() * z_0

    # -- the blend towards z_c (ModelConfig.anchor) ------------------------------------
    @property
    def anchored(self) -> bool:
        """True when the model carries fitted blend weights towards z_c."""
        return bool(self.config.anchor.weights)

    def anchor_weights(self, t: int, like: torch.Tensor) -> torch.Tensor:
        """The per-channel blend ``a(t)`` (1 x L x 1 x 1 x 1), linear between the fitted knots."""
        knots = [float(k) for k in self.config.anchor.timesteps]
        table = torch.tensor(self.config.anchor.weights, dtype=like.dtype, device=like.device)
        t = min(max(float(t), knots[0]), knots[-1])
        upper = next(i for i, k in enumerate(knots) if k >= t)
        if upper == 0 or knots[upper] == t:
            row = table[upper]
        else:
            w = (t - knots[upper - 1]) / (knots[upper] - knots[upper - 1])
            row = (1.0 - w) * table[upper - 1] + w * table[upper]
        return row.view(1, -1, *([1] * (like.ndim - 2)))

    def anchor_noise(self, eps: torch.Tensor, z_t: torch.Tensor, t: int | torch.Tensor,
                     z_c: torch.Tensor) -> torch.Tensor:
        """``eps`` blended with the noise that would make z_c the clean estimate.

        The clean estimate is affine in the noise estimate at fixed ``z_t``, so blending the
        noise by ``a`` blends the clean estimates by ``a`` (:class:`AnchorConfig`). ``t`` is
        one timestep or one per sample (distillation draws a timestep per patch).
        """
        steps = _timesteps(t, z_t).tolist()
        if len(set(steps)) == 1:
            step = steps[0]
            return blend_towards(eps, z_t, z_c, float(self.alphas_cumprod[step]), self.anchor_weights(step, z_t))
        return torch.cat([self.anchor_noise(eps[i:i + 1], z_t[i:i + 1], step, z_c[i:i + 1])
                          for i, step in enumerate(steps)])

    # -- noise prediction -----------------------------------------------------------
    def network_output(self, z_t: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        """The raw conditional output (epsilon or v, per ``schedule.prediction_type``).

        Args:
            z_t: B x L x h x w x d noisy PSR latent.
            t: B (or scalar) integer timesteps.
            z_c: B x L x h x w x d conditioning latent.
        """
        t = _timesteps(t, z_t)
        down = mid = None
        if self.controlnet is not None:
            down, mid = self.controlnet(z_t, t, controlnet_cond=z_c)
        context = self.semantic.conditioned(z_c) if self.semantic is not None else contextlib.nullcontext()
        with context:
            output = self.backbone(
                z_t, t, down_block_additional_residuals=down, mid_block_additional_residual=mid
            )
        if self.skip is not None:
            output = self.skip(output, self.output_for_clean(z_c, z_t, t), t)
        return output

    def backbone_output(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The raw output of the backbone alone: no condition, adapters off."""
        with self.adapters_disabled():
            return self.backbone(z_t, _timesteps(t, z_t))

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        """Conditional noise prediction with all enabled streams.

        Args:
            z_t: B x L x h x w x d noisy PSR latent.
            t: B (or scalar) integer timesteps.
            z_c: B x L x h x w x d conditioning latent.

        Returns:
            B x L x h x w x d predicted noise.
        """
        return self.to_noise(self.network_output(z_t, t, z_c), z_t, _timesteps(t, z_t))

    def guided_noise(self, z_t: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor, guidance: float) -> torch.Tensor:
        """Classifier-free guidance: ``eps_u + guidance * (eps_model - eps_u)``; guidance 1 is one pass.

        With ``config.sampling.guidance_interval`` each sample outside it gets the model alone, and a
        batch wholly outside it costs one pass.

        ``eps_u`` is the branch ``config.sampling.unconditional`` names: the frozen backbone
        (adapters off) or the adapted backbone (adapters on, no condition).
        """
        eps = self.predict_noise(z_t, t, z_c)
        if guidance == 1.0:
            return eps
        guided = guidance_applies(self.config.sampling.guidance_interval, _timesteps(t, z_t))
        if not bool(guided.any()):
            return eps
        if self.config.sampling.unconditional == "adapted":
            unconditional = self.adapted_noise(z_t, t)
        else:
            unconditional = self.backbone_noise(z_t, t)
        scale = torch.where(guided, guidance, 1.0).to(eps.dtype).view(-1, *[1] * (eps.dim() - 1))
        return unconditional + scale * (eps - unconditional)

    def sampler_noise(self, z_t: torch.Tensor, t: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        """The noise estimate this model's own sampler steps with: its guidance, then its blend.

        What :class:`~demist_bids.inference.sampler.VolumeRunner` computes on a whole latent,
        and what a distillation teacher is imitated by (:mod:`demist_bids.training.distill`).
        """
        eps = self.guided_noise(z_t, t, z_c, float(self.config.sampling.guidance))
        return self.anchor_noise(eps, z_t, t, z_c) if self.anchored else eps

    def backbone_noise(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The backbone alone: no condition, adapters off (unconditional stage, zero-init checks).

        Args:
            z_t: B x L x h x w x d noisy PSR latent.
            t: B (or scalar) integer timesteps.

        Returns:
            B x L x h x w x d predicted noise.
        """
        return self.to_noise(self.backbone_output(z_t, t), z_t, _timesteps(t, z_t))

    def adapted_noise(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The backbone with its LoRA adapters and no condition (no tokens, no ControlNet residuals)."""
        t = _timesteps(t, z_t)
        return self.to_noise(self.backbone(z_t, t), z_t, t)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """Run the backbone without its LoRA adapters."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.backbone.modules() if isinstance(m, BaseTunerLayer)]
        deltas = [m for m in self.backbone.modules() if isinstance(m, LowRankDelta)]
        for layer in layers:
            layer.enable_adapters(False)
        saved = [d.scaling for d in deltas]
        for delta in deltas:
            delta.scaling = 0.0
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            for delta, scaling in zip(deltas, saved):
                delta.scaling = scaling


def blend_towards(eps: torch.Tensor, z_t: torch.Tensor, z_c: torch.Tensor, abar: float,
                  a: torch.Tensor) -> torch.Tensor:
    """``eps`` moved by ``a`` towards the noise whose clean estimate at ``abar`` is ``z_c``."""
    eps_c = (z_t - abar ** 0.5 * z_c) / (1.0 - abar) ** 0.5
    return eps + a * (eps_c - eps)


def _alphas_cumprod(config: ModelConfig) -> torch.Tensor:
    """abar_t of the training schedule (MONAI's own schedule functions)."""
    from monai.networks.schedulers import DDPMScheduler

    from demist_bids.models.noise_schedule import schedule_arguments

    return DDPMScheduler(**schedule_arguments(config.schedule)).alphas_cumprod.float()


def check_guidance_interval(interval: list[int] | None) -> None:
    """Refuse a ``sampling.guidance_interval`` that is neither None nor ``[lo, hi]`` with ``0 <= lo < hi``."""
    if interval is not None and (len(interval) != 2 or not 0 <= interval[0] < interval[1]):
        raise ValueError(f"sampling.guidance_interval must be [lo, hi] with 0 <= lo < hi, not {interval}")


def guidance_applies(interval: list[int] | None, t: torch.Tensor) -> torch.Tensor:
    """Which timesteps of ``t`` are guided: all without an interval, else ``lo <= t < hi``."""
    check_guidance_interval(interval)
    if interval is None:
        return torch.ones_like(t, dtype=torch.bool)
    return (t >= interval[0]) & (t < interval[1])


def _timesteps(t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t.long()


def build_model(config: ModelConfig) -> DemistModel:
    """A randomly initialised model: backbone and autoencoders frozen, streams at zero-init.

    Args:
        config: e.g. ``preset("small")``.

    Returns:
        The model in eval mode (call ``.train()`` to train).
    """
    model = DemistModel(config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    LOGGER.info(
        "built DEMIST (%s, streams %s): %d parameters, %d trainable",
        config.preset,
        config.streams.ablation(),
        total,
        trainable,
    )
    return model.eval()
