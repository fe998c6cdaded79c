"""One function per optimisation stage of DEMIST (the paper's stage 1, backbone, stage 2).

- :func:`train_autoencoders` (``ae``): both KL autoencoders, L1 + KL + Sobel
  edge, plus a patch adversarial term once reconstructions are sensible
  (narrow initial posterior, cosine learning-rate decay);
- :func:`align_condition_encoder` (``align``): the PSR autoencoder frozen, the
  conditioning encoder fine-tuned so that z_c matches z_y (latent MSE, plus L1
  of the PSR map the frozen decoder makes of z_c); then both latent scale
  factors are computed over many patches;
- :func:`train_backbone` (``backbone``): the unconditional UNet on PSR latents,
  only where no pretrained backbone was given (a frozen random UNet is not the
  method);
- :func:`train_streams` (``diffusion``): only the enabled conditioning streams,
  noise MSE + edge on the decoded predicted clean latent + alignment (and,
  if the recipe asks, L1 of that decoded estimate, over the patch and over
  its lesion voxels);
- :func:`train_regressor` (``regressor``): the deterministic U-Net baseline of
  the evaluation, L1 on the same patches, independent of everything above.

Every stage runs through :func:`~demist_bids.training.engine.run_stage`
(checkpoints, resume, SIGTERM, logs) and averages gradients over DDP ranks
explicitly, so ranks always hold identical weights. Nothing here knows about
BIDS: inputs are a :class:`~demist_bids.training.patches.PatchSampler`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from demist_bids.training import losses
from demist_bids.training.checkpoints import TerminationFlag
from demist_bids.training.distributed import DistributedContext, average_gradients, average_scalar
from demist_bids.training.engine import Stage, run_stage, step_generator
from demist_bids.training.patches import PatchSampler
from demist_bids.training.recipes import TrainingRecipe
from demist_bids.training.weight_average import WeightAverage

LOGGER = logging.getLogger("demist.train")


@dataclass
class StageRun:
    """What every stage function needs besides the model."""

    sampler: PatchSampler
    recipe: TrainingRecipe
    directory: Path
    steps: int
    ctx: DistributedContext
    flag: TerminationFlag
    resume: bool
    seed: int
    device: torch.device


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _optimizer_step(ctx, params, optimizer, loss, grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(ctx, params)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def build_discriminator(in_channels: int, channels: int, patch_size) -> nn.Module:
    """MONAI patch discriminator with instance norm (no running stats to diverge across ranks).

    Three layers (as in MONAI's tutorials) from 32^3 patches on, two below, so
    the last feature map keeps more than one voxel.
    """
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=3, channels=channels, in_channels=in_channels, out_channels=1,
        num_layers_d=3 if min(patch_size) >= 32 else 2, norm="INSTANCE",
    )


def _noise_scheduler(model):
    from demist_bids.inference.schedulers import training_scheduler

    return training_scheduler(model.config.schedule)


# -- stage 1a: both autoencoders ------------------------------------------------------------

NARROW_LOG_VARIANCE = -8.0
"""Initial bias of the encoders' log-variance head (posterior sigma ~0.02)."""


def narrow_posterior(autoencoder) -> None:
    """Start a KL autoencoder's posterior nearly deterministic.

    MONAI initialises the log-variance head around 0 (sigma ~1, as wide as the
    prior). Short CPU budgets never shrink it, so the decoder learns from
    heavily noised latents and, decoding the posterior mean at inference,
    returns a shrunken map (the demo model v1 reconstructed PSR at ~0.8x its
    value, 17 dB). With the paper's tiny KL weight the posterior ends narrow
    anyway after long training; starting it there changes nothing else.
    """
    head = autoencoder.quant_conv_log_sigma
    conv = getattr(head, "conv", head)
    with torch.no_grad():
        conv.bias.fill_(NARROW_LOG_VARIANCE)


def cosine_learning_rate(optimizers, base: float, step: int, total: int, floor: float = 0.05) -> None:
    """Set a cosine-decayed learning rate (a function of the step alone, so resume-safe).

    A parameter group with an ``lr_scale`` entry gets that multiple of the rate.
    """
    progress = min(step / max(total, 1), 1.0)
    lr = base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def train_autoencoders(model, run: StageRun) -> None:
    """Train the PSR and the conditioning autoencoder together (``ae`` stage)."""
    recipe, ctx = run.recipe, run.ctx
    width = model.config.autoencoder.channels[0]
    pairs = {
        "psr": (model.psr_autoencoder, build_discriminator(1, width, recipe.patch_size).to(run.device), "psr01"),
        "cond": (model.cond_autoencoder, build_discriminator(2, width, recipe.patch_size).to(run.device), "cond"),
    }
    for ae, disc, _ in pairs.values():
        narrow_posterior(ae)  # a resumed stage restores the checkpoint's weights over this
        ae.requires_grad_(True).train()
        disc.train()
    gen_params = {k: list(ae.parameters()) for k, (ae, _, _) in pairs.items()}
    disc_params = {k: list(d.parameters()) for k, (_, d, _) in pairs.items()}
    lr = recipe.learning_rate["ae"]
    optimizers = {}
    for key in pairs:
        optimizers[f"{key}_ae"] = torch.optim.Adam(gen_params[key], lr=lr)
        optimizers[f"{key}_disc"] = torch.optim.Adam(disc_params[key], lr=lr)
    adversarial_from = int(recipe.adversarial_start * run.steps)

    def step(i: int) -> dict[str, float]:
        cosine_learning_rate(optimizers.values(), lr, i, run.steps)
        batch = _to(run.sampler.batch(i, recipe.batch_size, stream=1), run.device)
        use_adv = recipe.adversarial_weight > 0 and i >= adversarial_from
        logged = {}
        for key, (ae, disc, field) in pairs.items():
            image = batch[field]
            recon, z_mu, z_sigma = ae(image)
            parts = losses.autoencoder_loss(
                recon, image, z_mu, z_sigma, kl_weight=recipe.kl_weight, edge_weight=recipe.edge_weight,
                adversarial_weight=recipe.adversarial_weight,
                fake_logits=disc(recon)[-1] if use_adv else None,
            )
            total = parts.pop("total")
            _optimizer_step(ctx, gen_params[key], optimizers[f"{key}_ae"], total, recipe.grad_clip)
            if use_adv:
                d_loss = losses.discriminator_loss(disc(image)[-1], disc(recon.detach())[-1])
                _optimizer_step(ctx, disc_params[key], optimizers[f"{key}_disc"], d_loss, recipe.grad_clip)
                parts["disc"] = d_loss
            zero = torch.zeros((), device=run.device)
            parts.setdefault("adv", zero)
            parts.setdefault("disc", zero)
            for name, value in parts.items():
                logged[f"{key}_{name}"] = average_scalar(ctx, float(value.detach()))
        logged["loss"] = logged["psr_l1"] + logged["cond_l1"]
        return logged

    stage = Stage(
        "ae", run.directory, run.steps, recipe.steps_per_epoch,
        modules={
            "psr_autoencoder": model.psr_autoencoder, "cond_autoencoder": model.cond_autoencoder,
            "psr_discriminator": pairs["psr"][1], "cond_discriminator": pairs["cond"][1],
        },
        optimizers=optimizers,
    )
    run_stage(stage, step, ctx=ctx, flag=run.flag, resume=run.resume)
    model.psr_autoencoder.requires_grad_(False).eval()
    model.cond_autoencoder.requires_grad_(False).eval()


# -- stage 1b: align the conditioning encoder ---------------------------------------------------


def _encoder_parameters(autoencoder) -> list[nn.Parameter]:
    """Encoder side of a MONAI AutoencoderKL (the decoder is not used for conditioning)."""
    return [
        p for name, p in autoencoder.named_parameters()
        if name.startswith(("encoder.", "quant_conv_mu.", "quant_conv_log_sigma."))
    ]


def align_condition_encoder(model, run: StageRun) -> dict[str, float]:
    """Fine-tune E_cond towards the frozen E_PSR, then compute the latent scale factors.

    Returns:
        ``{"psr_latent_scale": ..., "cond_latent_scale": ...}``, also set on ``model.config``.
    """
    from demist_bids.models.autoencoders import posterior_mean

    recipe, ctx = run.recipe, run.ctx
    model.psr_autoencoder.requires_grad_(False).eval()
    params = _encoder_parameters(model.cond_autoencoder)
    for p in params:
        p.requires_grad_(True)
    model.cond_autoencoder.train()
    optimizer = torch.optim.Adam(params, lr=recipe.learning_rate["align"])

    def step(i: int) -> dict[str, float]:
        cosine_learning_rate([optimizer], recipe.learning_rate["align"], i, run.steps)
        batch = _to(run.sampler.batch(i, recipe.batch_size, stream=2,
                                      lesion_fraction=recipe.align_lesion_fraction), run.device)
        with torch.no_grad():
            z_y = posterior_mean(model.psr_autoencoder, batch["psr01"])
        z_c = posterior_mean(model.cond_autoencoder, batch["cond"])
        parts = {"latent": losses.alignment_loss(z_c, z_y)}
        loss = parts["latent"]
        if recipe.align_decoded_weight > 0:
            # what z_c is for: the PSR map the frozen PSR decoder makes of it
            parts["decoded"] = losses.decoded_alignment_loss(model.psr_autoencoder.decode(z_c), batch["psr01"])
            loss = loss + recipe.align_decoded_weight * parts["decoded"]
        _optimizer_step(ctx, params, optimizer, loss, recipe.grad_clip)
        logged = {k: average_scalar(ctx, float(v.detach())) for k, v in parts.items()}
        logged["loss"] = average_scalar(ctx, float(loss.detach()))
        return logged

    stage = Stage(
        "align", run.directory, run.steps, recipe.steps_per_epoch,
        modules={"cond_autoencoder": model.cond_autoencoder, "psr_autoencoder": model.psr_autoencoder},
        optimizers={"cond_encoder": optimizer},
    )

    def scale_factors() -> None:
        model.cond_autoencoder.eval()
        stage.extra.update(measure_latent_statistics(model, run))

    run_stage(stage, step, ctx=ctx, flag=run.flag, resume=run.resume, finalize=scale_factors)
    model.cond_autoencoder.requires_grad_(False).eval()
    return apply_latent_statistics(model.config, stage.extra)


def measure_latent_statistics(model, run: StageRun) -> dict:
    """Latent scale factors (and per-channel statistics) over many un-augmented patches.

    Run at the end of the ``align`` stage, or on autoencoders taken from another
    model (``--autoencoders-from``), whose statistics on this cohort may differ.
    """
    from demist_bids.models.autoencoders import latent_channel_statistics, latent_scale_factor

    recipe = run.recipe
    batches = [_to(b, run.device) for b in run.sampler.fixed_batches(recipe.scale_factor_batches, recipe.batch_size)]
    values = {
        "psr_latent_scale": latent_scale_factor(model.psr_autoencoder, (b["psr01"] for b in batches)),
        "cond_latent_scale": latent_scale_factor(model.cond_autoencoder, (b["cond"] for b in batches)),
        "latent_shift": [], "latent_channel_scale": [],
    }
    if recipe.latent_standardization == "channel":
        values["latent_shift"], values["latent_channel_scale"] = latent_channel_statistics(
            model.psr_autoencoder, (b["psr01"] for b in batches))
    return values


LATENT_STATISTICS = ("psr_latent_scale", "cond_latent_scale", "latent_shift", "latent_channel_scale")
"""What the ``align`` stage measures and every model built on its autoencoders must carry."""


def apply_latent_statistics(config, source) -> dict:
    """Copy the latent scaling of ``source`` (an align stage's extra or a config) onto ``config``."""
    values = {}
    for key in LATENT_STATISTICS:
        value = source.get(key) if isinstance(source, dict) else getattr(source, key)
        if value is None:  # a stage finished before per-channel statistics existed
            value = []
        values[key] = [float(v) for v in value] if isinstance(value, list) else float(value)
        setattr(config, key, values[key])
    return values


# -- the unconditional backbone --------------------------------------------------------------


def sample_timesteps(count: int, total: int, high_noise_bias: float, generator: torch.Generator,
                     band: tuple[int, ...] | list[int] = (), band_density: float = 1.0) -> torch.Tensor:
    """Training timesteps: uniform, with density growing linearly towards high noise, or denser in a band.

    ``high_noise_bias``: density proportional to ``1 + bias * t / T`` (bias 0: uniform), so the
    steps a pure-noise sampler takes first, where its errors are amplified most, are drawn
    ``1 + bias`` times as often as the last. ``band = [lo, hi]``: t in ``lo <= t < hi`` is drawn
    ``band_density`` times as often as any other t.
    Every form inverts its CDF from one uniform draw per timestep, so the uniform default draws
    exactly what it always drew.
    """
    u = torch.rand(count, generator=generator)
    if band and band_density != 1.0:
        lo, hi = (int(v) for v in band)
        if high_noise_bias > 0 or not 0 <= lo < hi <= total or band_density < 1.0:
            raise ValueError(f"timestep band {band} (density {band_density}) does not fit 0..{total} "
                             "or is combined with high_noise_bias")
        width, extra = hi - lo, band_density - 1.0
        x = u * (total + extra * width)  # position along the unnormalized CDF
        inside = (x >= lo) & (x < lo + band_density * width)
        t = torch.where(x < lo, x, torch.where(inside, lo + (x - lo) / band_density, x - extra * width))
        return t.long().clamp_(0, total - 1)
    if high_noise_bias <= 0:
        return (u * total).long().clamp_(0, total - 1)
    b = float(high_noise_bias)
    x = (torch.sqrt(1.0 + 2.0 * b * u * (1.0 + 0.5 * b)) - 1.0) / b  # inverse CDF
    return (x * total).long().clamp_(0, total - 1)


def _weight_average(params, recipe: TrainingRecipe, modules: dict) -> WeightAverage | None:
    """The recipe's average of ``params``, checkpointed beside ``modules``; None without ``ema_decay``."""
    if recipe.ema_decay <= 0:
        return None
    average = WeightAverage(params, recipe.ema_decay)
    modules["weight_average"] = average
    return average


def _noisy(model, scheduler, z0: torch.Tensor, generator: torch.Generator, recipe: TrainingRecipe):
    t = sample_timesteps(z0.shape[0], scheduler.num_train_timesteps, recipe.high_noise_bias, generator,
                         recipe.timestep_band, recipe.timestep_band_density).to(z0.device)
    noise = torch.randn(z0.shape, generator=generator).to(z0.device)
    return scheduler.add_noise(z0, noise, t), noise, t


def train_backbone(model, run: StageRun) -> None:
    """Train the UNet unconditionally on PSR latents, then freeze it (``backbone`` stage)."""
    recipe, ctx = run.recipe, run.ctx
    scheduler = _noise_scheduler(model)
    model.unfreeze_backbone()
    model.backbone.train()
    params = model.backbone_parameters()
    optimizer = torch.optim.Adam(params, lr=recipe.learning_rate["backbone"])

    def step(i: int) -> dict[str, float]:
        cosine_learning_rate([optimizer], recipe.learning_rate["backbone"], i, run.steps)
        batch = _to(run.sampler.batch(i, recipe.batch_size, stream=3), run.device)
        gen = step_generator(run.seed, ctx.rank, "backbone", i)
        with torch.no_grad():
            z0 = model.encode_psr(batch["psr01"])
        z_t, noise, t = _noisy(model, scheduler, z0, gen, recipe)
        # the network's own parametrization (epsilon or v) is what is trained
        loss = losses.noise_loss(model.backbone_output(z_t, t), model.training_target(z0, noise, t))
        _optimizer_step(ctx, params, optimizer, loss, recipe.grad_clip)
        if average is not None:
            average.update()
        return {"loss": average_scalar(ctx, float(loss.detach()))}

    modules = {"backbone": model.backbone}
    average = _weight_average(params, recipe, modules)
    stage = Stage("backbone", run.directory, run.steps, recipe.steps_per_epoch,
                  modules=modules, optimizers={"backbone": optimizer})
    run_stage(stage, step, ctx=ctx, flag=run.flag, resume=run.resume,
              finalize=average.copy_to if average is not None else None)
    model.freeze_backbone()
    model.sync_controlnet_from_backbone()
    model.backbone.eval()


# -- stage 2: the conditioning streams ---------------------------------------------------------


def train_streams(model, run: StageRun, *, name: str = "diffusion") -> None:
    """Train only the enabled streams (``diffusion`` stage; one call per Table 1 method)."""
    recipe, ctx = run.recipe, run.ctx
    scheduler = _noise_scheduler(model)
    model.freeze_backbone()
    params = model.trainable_stream_parameters()
    if recipe.cond_encoder_in_diffusion:
        encoder = _encoder_parameters(model.cond_autoencoder)
        for p in encoder:
            p.requires_grad_(True)
        params = params + encoder
    model.train()
    gates = {id(p) for p in model.gate_parameters()}
    # a third group only when it differs, so a run checkpointed with two groups still resumes
    lora_up = {id(p) for p in model.lora_up_parameters()} if recipe.lora_b_lr_multiplier != 1.0 else set()
    groups = [
        {"params": [p for p in params if id(p) not in gates and id(p) not in lora_up]},
        {"params": [p for p in params if id(p) in gates], "lr_scale": recipe.gate_lr_multiplier},
    ]
    if lora_up:
        groups.append({"params": [p for p in params if id(p) in lora_up], "lr_scale": recipe.lora_b_lr_multiplier})
    optimizer = torch.optim.Adam(groups, lr=recipe.learning_rate["diffusion"])
    alphas_cumprod = scheduler.alphas_cumprod.to(run.device)

    def step(i: int) -> dict[str, float]:
        cosine_learning_rate([optimizer], recipe.learning_rate["diffusion"], i, run.steps)
        batch = _to(run.sampler.batch(i, recipe.batch_size, stream=4,
                                      lesion_fraction=recipe.diffusion_lesion_fraction), run.device)
        gen = step_generator(run.seed, ctx.rank, name, i)
        with torch.no_grad():
            z_y = model.encode_psr(batch["psr01"])
        z_c = model.encode_condition(batch["cond"])
        z_t, noise, t = _noisy(model, scheduler, z_y, gen, recipe)
        if recipe.diffusion_input_perturbation > 0:
            # the network reads z_y noised by noise + gamma * xi; its target stays that of ``noise``
            extra = torch.randn(z_t.shape, generator=gen).to(z_t.device)
            z_t = scheduler.add_noise(z_y, noise + recipe.diffusion_input_perturbation * extra, t)
        output = model.network_output(z_t, t, z_c)
        eps = model.to_noise(output, z_t, t)
        parts = {
            "mse": losses.noise_loss(output, model.training_target(z_y, noise, t)),
            "align": losses.alignment_loss(z_c, z_y),
            "edge": torch.zeros((), device=run.device),
        }
        total = parts["mse"] + recipe.align_weight * parts["align"]
        if recipe.diffusion_cond_decoded_weight > 0:
            # E_cond trains here too: keep z_c a latent the PSR decoder reads, as the align stage asked
            parts["cond_decoded"] = losses.decoded_alignment_loss(model.decode_psr(z_c), batch["psr01"])
            total = total + recipe.diffusion_cond_decoded_weight * parts["cond_decoded"]
        ramped = recipe.diffusion_decoded_high_noise_weight > 0
        whole_patch = recipe.diffusion_decoded_weight > 0 or ramped
        decoded_terms = whole_patch or recipe.diffusion_decoded_lesion_weight > 0
        if recipe.edge_weight > 0 or decoded_terms:
            z0_hat = losses.predicted_clean_latent(z_t, eps, t, alphas_cumprod)
        decoded_all = None
        if decoded_terms:
            # the decoder normalizes each patch on its own, so one decode serves every term
            decoded_all = model.decode_psr(z0_hat)
        if whole_patch:
            parts["decoded"] = losses.decoded_alignment_loss(decoded_all, batch["psr01"])  # logged unweighted
            if ramped:
                weights = losses.timestep_ramp(t, scheduler.num_train_timesteps, recipe.diffusion_decoded_weight,
                                               recipe.diffusion_decoded_high_noise_weight)
                total = total + losses.decoded_alignment_loss(decoded_all, batch["psr01"], weights)
            else:
                total = total + recipe.diffusion_decoded_weight * parts["decoded"]
        if recipe.diffusion_decoded_lesion_weight > 0:
            parts["decoded_lesion"] = losses.lesion_l1_loss(decoded_all, batch["psr01"], batch["lesion"])
            total = total + recipe.diffusion_decoded_lesion_weight * parts["decoded_lesion"]
        if recipe.edge_weight > 0:
            rows = t < recipe.edge_timestep_max
            if rows.any():
                decoded = decoded_all[rows] if decoded_all is not None else model.decode_psr(z0_hat[rows])
                parts["edge"] = losses.edge_loss(decoded, batch["psr01"][rows])
                total = total + recipe.edge_weight * parts["edge"] * rows.float().mean()
        _optimizer_step(ctx, params, optimizer, total, recipe.grad_clip)
        if average is not None:
            average.update()
        logged = {k: average_scalar(ctx, float(v.detach())) for k, v in parts.items()}
        logged["loss"] = average_scalar(ctx, float(total.detach()))
        return logged

    modules = {"model": model}
    average = _weight_average(params, recipe, modules)
    stage = Stage(name, run.directory, run.steps, recipe.steps_per_epoch,
                  modules=modules, optimizers={"streams": optimizer})
    run_stage(stage, step, ctx=ctx, flag=run.flag, resume=run.resume,
              finalize=average.copy_to if average is not None else None)
    model.eval()
    model.cond_autoencoder.requires_grad_(False)


# -- the U-Net regressor baseline ------------------------------------------------------------


def regressor_config(recipe: TrainingRecipe, psr_scale: float):
    """The regressor a recipe trains: its widths, the recipe's patch, the cohort's PSR scale."""
    from demist_bids.models.regressor import RegressorConfig

    return RegressorConfig(features=list(recipe.regressor_features), patch_size=list(recipe.patch_size),
                           psr_scale=float(psr_scale))


def train_regressor(net: nn.Module, run: StageRun) -> None:
    """Train the deterministic U-Net baseline, T1w+FLAIR -> PSR/psr_scale with L1 (``regressor`` stage).

    Same patches as the diffusion stages (its own random stream), same optimiser
    and cosine schedule; nothing of DEMIST is shared, so it can run before,
    after or without them.
    """
    recipe, ctx = run.recipe, run.ctx
    net.train()
    params = list(net.parameters())
    lr = recipe.learning_rate["regressor"]
    optimizer = torch.optim.Adam(params, lr=lr)

    def step(i: int) -> dict[str, float]:
        cosine_learning_rate([optimizer], lr, i, run.steps)
        batch = _to(run.sampler.batch(i, recipe.batch_size, stream=5), run.device)
        loss = torch.nn.functional.l1_loss(net(batch["cond"]), batch["psr01"])
        _optimizer_step(ctx, params, optimizer, loss, recipe.grad_clip)
        return {"loss": average_scalar(ctx, float(loss.detach()))}

    stage = Stage("regressor", run.directory, run.steps, recipe.steps_per_epoch,
                  modules={"regressor": net}, optimizers={"regressor": optimizer})
    run_stage(stage, step, ctx=ctx, flag=run.flag, resume=run.resume)
    net.eval()


def fit_regressor(run: StageRun, psr_scale: float, destination: Path, *, save: bool = True) -> Path:
    """Build the recipe's regressor on ``run.device``, train it (resumable) and save it in ``destination``.

    Seed torch first: the initial weights come from its global generator.
    ``save`` is False on every DDP rank but the main one.
    """
    from demist_bids.models.regressor import build_regressor, save_regressor

    config = regressor_config(run.recipe, psr_scale)
    net = build_regressor(config).to(run.device)
    train_regressor(net, run)
    return save_regressor(net, config, destination) if save else Path(destination)
