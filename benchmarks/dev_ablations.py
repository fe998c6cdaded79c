"""Table-1 ablations and the pure-noise sampler grid on the development cohort, sized for one GPU.

Issue 16 targets 2 and 4 need many diffusion trainings and many pure-noise
samples; on 2 CPU cores that is hours per row. This benchmark does them in one
process tree on whatever device it gets, from two files the CPU machine packs::

    # on the CPU machine (Nipype preprocessing; cached in WORK):
    python benchmarks/dev_ablations.py pack --bids /path/train_bids --work WORK --cache train_preproc --out train.npz
    python benchmarks/dev_ablations.py pack --bids /path/dev_bids --work WORK --cache dev_preproc --out dev.npz
    # anywhere (needs torch, MONAI, nibabel; not Nipype or pybids):
    python benchmarks/dev_ablations.py run --train train.npz --dev dev.npz --foundation MODEL \\
        --recipe scripts/demo_recipe_issue16.toml --out OUT [--device cuda] [--steps N] [--scans K] \\
        [--grid full|ablation|order|order-g1|tiny|level|noise-scale|truth-noised|latent-noise|stochastic] \\
        [--token-stride S] [--methods demist,ftldm,...] [--sdpa] \\
        [--unconditional backbone|adapted] [--noise-scale X] [--backbone-steps N]
    # (--backbone-steps: fine-tune MODEL's backbone N steps on the recipe's schedule first, e.g. for a
    # recipe's terminal_snr; otherwise the streams train on MODEL's frozen backbone)
    # a copy of MODEL whose backbone learned another image domain (as the paper's learned BraTS):
    python benchmarks/dev_ablations.py prior --train train.npz --foundation MODEL --recipe RECIPE --out PRIOR \\
        [--domain flair|t1w] [--steps N] [--attention-levels 0,1,1]
    # one trained model, no training (e.g. the sampler grid of a model with a fitted blend towards z_c):
    python benchmarks/dev_ablations.py score --model MODEL --dev dev.npz --out OUT \\
        [--grid anchored|own|own-stored|spread] [--device cpu]
    # one finished ``run`` training as a model directory (for demist-evaluate or the participant level):
    python benchmarks/dev_ablations.py export --train train.npz --foundation MODEL --recipe RECIPE --work WORK \\
        --method demist --seed 0 --out MODEL_DIR [--steps 20] [--guidance 1.5]
    # two methods over training seeds (each OUT a ``run`` of one method with its own --seed):
    python benchmarks/dev_ablations.py seeds --a demist=OUT1,OUT2,OUT3 --b controlnet=OUT4,OUT5,OUT6 [--scans K] \\
        [--psr-scale S]
    # each run's row with its level set to no diffusion's (how much of the gap a level correction could close):
    python benchmarks/dev_ablations.py levelled OUT1 OUT2 ... --psr-scale S [--row ddim20x4-g1.5]
    # two rows paired over the scans they share (e.g. a candidate against no diffusion on a test cohort; a
    # cohort scored in parts gives its OUT folders comma-separated):
    python benchmarks/dev_ablations.py paired --a LABEL:ROW=OUT1[,OUT2] --b LABEL:ROW=OUT3 [--psr-scale S]

``score --grid spread`` measures issue 16's target 2 on a model's own sampler
(its steps, guidance, blend and precision): one sample against the mean of 4,
the Spearman correlation of the 4 samples' per-voxel std with the absolute
error, and per row the error's structure and two oracles (see ``FIELDS``); its
last line is::

    one_sample_psnr_db=<x> mean_of_4_psnr_db=<x> better=<k>/<n> spearman_std_err=<r> target2_met=<bool>
        mean_std=<PSR> smooth_share=<s> nodiff_smooth_share=<s> oracle_smooth=<r> oracle_level=<r>

(one line; the oracles, see ``FIELDS``, say what kind of uncertainty map could reach the target)

``run`` takes the autoencoders, latent statistics and unconditional backbone of
the ``--foundation`` model (a trained demist model directory) and trains, in
parallel worker processes, the diffusion stage of each Table-1 method
(``demist``, ``ftldm``, ``controlnet``, ``lora``: the train level's
``_diffusion_model``, same recipe, same seeds), then scores every method on the
development scans with the pure-noise DDIM grid (steps x samples x classifier-free
guidance), the default start-from-z_c sampler and no diffusion (decode z_c),
plus the foundation itself as ``foundation``. Per scan and row: PSNR, SSIM,
voxel-wise and lesion-level AUC, and for rows of several samples the Spearman
correlation of the per-voxel std with the absolute error inside the brain.
Rows are appended to ``OUT/rows.tsv`` as they finish (a run stopped early keeps
what it measured); ``OUT/summary.tsv`` holds the means, and the last line is::

    best_pure_noise=<row> psnr_db=<x> nodiff_psnr_db=<x> order_ok=<bool>

where ``order_ok`` is target 4: with the paper's sampler (DDIM-20, mean of 4,
guidance 1.5) the full model beats each single-stream model, and each of those
beats ``ftldm``. The arrays are stored as float16 inside each scan's brain box
(the scoring happens inside the brain), so a CPU run and this run see the same
numbers to about 1e-3.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from demist_bids.models.config import UNCONDITIONAL_BRANCHES

METHODS_TRAINED = ("demist", "ftldm", "controlnet", "lora")
GRIDS = {
    # (steps, samples, guidance) of pure-noise DDIM, most important first
    "full": [(20, 4, 1.5), (20, 1, 1.5), (20, 4, 1.0), (4, 4, 1.5), (2, 4, 1.5), (1, 1, 1.5),
             (4, 1, 1.5), (2, 1, 1.5), (20, 4, 2.5), (4, 4, 2.5), (2, 4, 2.5), (1, 1, 2.5),
             (4, 4, 1.0), (2, 4, 1.0), (1, 1, 1.0), (20, 1, 1.0)],
    "ablation": [(20, 4, 1.5), (20, 1, 1.5), (20, 4, 1.0), (4, 4, 1.5)],
    # target 4's row alone (the paper's sampler, mean of 4): what a CPU run of the ablations can afford
    "order": [(20, 4, 1.5)],
    # the same row without classifier-free guidance: the model alone, as the paper samples (issue 16, session 16)
    "order-g1": [(20, 4, 1.0)],
    # the paper's sampler at fewer DDIM steps (pure noise, mean of 4, guidance 1.5): issue 16 allows at most 20,
    # and session 32's chains decoded their t = 249 estimate (DDIM-4's end) above DDIM-20's end (session 33)
    "steps": [(4, 4, 1.5), (10, 4, 1.5)],
    # the paper's row at the guidance scales either side of 1.5: the lesion-level AUC is what session 33's
    # recipe X lost, and guidance is what weighs the condition against the prior at sampling
    "guidance": [(20, 4, 1.0), (20, 4, 2.0)],
    # ("interval", steps, samples, guidance, lo, hi): guidance only at lo <= t < hi, the model alone elsewhere
    # (SamplingConfig.guidance_interval), beside the same scales at every step: do guidance's lesion contrast
    # and its pull on the level come from different noise levels (session 34)
    "guidance-interval": [(20, 4, 1.0), (20, 4, 2.0), ("interval", 20, 4, 2.0, 0, 500),
                          ("interval", 20, 4, 2.0, 500, 1000)],
    # its row at t < 500 alone, for the scans the screen above did not read
    "guidance-low": [("interval", 20, 4, 2.0, 0, 500)],
    "tiny": [(2, 2, 1.5), (1, 1, 1.0)],
    # one pure-noise chain stopped after 1, 2, 4 and 20 DDIM steps (the same noise): DDIM-1 returns the first clean
    # estimate at t = 999, so its level against DDIM-20's says where along the chain the level is set (session 21)
    "level": [(1, 1, 1.5), (2, 1, 1.5), (4, 1, 1.5), (20, 1, 1.5)],
    # one pure-noise DDIM-20 chain (the same noise, guidance 1.5, no blend) with every noise estimate divided
    # by a scale (steps, samples, guidance, anchor, noise_scale; SamplingConfig.noise_scale): epsilon scaling
    # against exposure bias, the lever session 21's level test left (session 22)
    "noise-scale": [(20, 1, 1.5, False, scale) for scale in (1.0, 0.98, 0.99, 1.01, 1.02, 1.04)],
    # ("truth", t, guidance): the clean estimate at t from the measured PSR's latent noised by the forward
    # process (estimate_from_truth), at the timesteps whose chain estimates the level grid stops at: the
    # network on training-like states beside its own chain (session 22)
    "truth-noised": [("truth", t, 1.5) for t in (999, 749, 499, 249)],
    # ("latent", std): the measured PSR's own latent with white noise of that std (standardized latent units)
    # decoded: how the PSR decoder turns a latent error without a level into a map's level (session 22)
    "latent-noise": [("latent", std) for std in (0.0, 0.1, 0.2, 0.3, 0.5)],
    # ("ddpm", steps, samples, guidance): the same pure-noise chain with fresh noise at every step (ancestral
    # sampling, DDIM's eta = 1, the DDPM posterior on the shortened schedule) beside plain DDIM-20: does
    # stochasticity correct the chain's systematic error (session 23)
    "stochastic": [(20, 1, 1.5), ("ddpm", 20, 1, 1.5), ("ddpm", 50, 1, 1.5)],
    # pure-noise DDIM with the model's fitted blend towards z_c (ModelConfig.anchor), (steps, samples, guidance,
    # anchor): the demo model's default (4 steps, its blend fitted along DDIM-4 chains), the same chains without
    # the blend, and 10 steps with the blend interpolated between the fitted knots
    "anchored": [(4, 1, 1.5, True), (4, 1, 1.5, False), (10, 1, 1.5, True)],
    "tiny-anchored": [(2, 1, 1.5, True)],
    # the model's own default sampler as its config stores it (steps, guidance, blend), in its own precision,
    # bf16 and fp32: e.g. a distilled student (issue 19)
    "own": [],
    # the same in its own precision only (one row beside no diffusion: comparing a model's settings)
    "own-stored": [],
    # issue 16 target 2 on the model's own sampler, in its own precision: one sample against the mean of
    # SPREAD_SAMPLES, and the per-voxel std of those samples against the absolute error
    "spread": [],
}
SPREAD_SAMPLES = 4
FIELDS = ("method", "row", "scan", "psnr", "ssim", "auc_combined", "lesion_auc", "spearman_std_err", "seconds",
          "bias", "smooth_share", "oracle_smooth", "oracle_level", "mean_std", "raw_bias")
"""``mean_std``: for several samples, the mean per-voxel std inside the brain (PSR units). ``bias``: the
mean signed error inside the brain (PSR units); ``smooth_share``: the share of the squared error left after
smoothing the error map with a 4 mm Gaussian (normalized inside the brain). Together they say how much of
the error is a subject-level offset or a smooth field. ``raw_bias``: for one-sample rows and no diffusion,
the bias of the same map before it was clipped to the PSR range (NaN for means of several samples); its
difference to ``bias`` is what the clip at 0 and at the scale adds to the level. Two oracles (they use the truth) bound
what an uncertainty map of a given kind could reach in target 2's Spearman: ``oracle_smooth``, the absolute
error ranked by its own 4 mm smoothing (a map that knows where the error is large, to 4 mm);
``oracle_level``, by the scan's mean absolute error in each decile of the true PSR (a map that knows only
how the error grows with the PSR level, as a spread of the subject's unseen myelin level would)."""
SMOOTH_SIGMA_MM = 4.0


# -- packing (CPU machine, Nipype) ---------------------------------------------------------
def pack(bids: Path, work: Path, cache: str, out: Path) -> None:
    """Preprocess a phantom cohort (cached) and store its arrays inside each brain's box, float16."""
    from demist_bids.training.external import preprocessed_volumes

    store_volumes(preprocessed_volumes(bids, work, cache), out)


def store_volumes(volumes, out: Path) -> None:
    """``volumes`` (TrainingVolume) as one compressed npz: float16 images, bool masks, inside a brain box."""
    arrays = {}
    for v in volumes:
        idx = np.argwhere(v.brain)
        lo, hi = np.maximum(idx.min(0) - 4, 0), np.minimum(idx.max(0) + 5, v.brain.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        arrays[f"{v.name}|cond"] = v.cond[(slice(None), *box)].astype(np.float16)
        arrays[f"{v.name}|psr"] = v.psr[box].astype(np.float16)
        arrays[f"{v.name}|affine"] = np.asarray(v.affine, dtype=np.float64)
        for key in ("brain", "lesion", "wm"):
            if getattr(v, key) is not None:
                arrays[f"{v.name}|{key}"] = getattr(v, key)[box].astype(bool)
    np.savez_compressed(out, **arrays)


def unpack(path: Path, limit: int | None = None) -> list:
    """The packed scans as :class:`~demist_bids.training.volumes.TrainingVolume` (float32)."""
    from demist_bids.training.volumes import TrainingVolume

    data = np.load(path)
    names = sorted({key.split("|")[0] for key in data.files})[:limit]

    def get(name, key, dtype):
        full = f"{name}|{key}"
        return data[full].astype(dtype) if full in data.files else None

    return [TrainingVolume(n, get(n, "cond", np.float32), get(n, "psr", np.float32), get(n, "brain", bool),
                           get(n, "lesion", bool), get(n, "wm", bool), get(n, "affine", np.float64))
            for n in names]


# -- a prior from another image domain (the paper's backbone comes from BraTS, not from PSR) ---------------
PRIOR_DOMAINS = {"t1w": 0, "flair": 1}


def prior(args) -> int:
    """Save a copy of ``--foundation`` whose backbone is trained from scratch on another image domain.

    The paper freezes a backbone pretrained on BraTS images and lets LoRA adapt it to PSR; a backbone
    trained on the phantom PSR maps themselves may leave LoRA no domain gap to close. This trains the
    backbone (same architecture unless ``--attention-levels`` says otherwise, same recipe and ``backbone``
    stage) on the training cohort's T1w or FLAIR
    channel, in [0, 1] like PSR / psr_scale, encoded by the foundation's own PSR autoencoder and
    standardized with its PSR latent statistics, so the prior lives in the latent space the streams work
    in but models another kind of image. The streams are left zero-initialized (the saved model equals
    its backbone); ``run --foundation OUT`` then trains the Table-1 methods on it.
    """
    import torch

    from demist_bids.models.config import ModelConfig
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import load_model, save_model
    from demist_bids.training.checkpoints import TerminationFlag
    from demist_bids.training.distributed import DistributedContext
    from demist_bids.training.patches import PatchSampler
    from demist_bids.training.recipes import load_recipe
    from demist_bids.training.stages import StageRun, train_backbone

    torch.set_num_threads(args.threads)
    foundation = load_model(Path(args.foundation), device=args.device)
    recipe = load_recipe(foundation.config.preset, Path(args.recipe))
    steps = args.steps or recipe.steps["backbone"]
    psr_scale = foundation.config.psr_scale
    channel = PRIOR_DOMAINS[args.domain]
    # the other image stands where the PSR map stood: PatchSampler divides by psr_scale again
    volumes = [dataclasses.replace(v, psr=v.cond[channel] * psr_scale) for v in unpack(Path(args.train))]
    # the foundation's architecture and latent statistics, without its card and its fitted blend towards z_c
    config = ModelConfig.from_dict({**{k: v for k, v in foundation.config.to_dict().items() if k != "anchor"},
                                    "card": {}})
    if args.attention_levels:
        _set_attention_levels(config.unet, args.attention_levels)
    torch.manual_seed(args.seed)
    model = build_model(config).to(args.device)  # a fresh, randomly initialized backbone
    model.psr_autoencoder.load_state_dict(foundation.psr_autoencoder.state_dict())
    model.cond_autoencoder.load_state_dict(foundation.cond_autoencoder.state_dict())
    sampler = PatchSampler(volumes, recipe.patch_size, psr_scale, seed=args.seed, rank=0)
    run = StageRun(sampler, recipe, Path(args.work) / f"prior-{args.domain}", steps, DistributedContext(),
                   TerminationFlag(), args.resume, args.seed, torch.device(args.device))
    t0 = time.perf_counter()
    train_backbone(model, run)
    levels = "".join("A" if a else "-" for a in config.unet.attention_levels)
    save_model(model, Path(args.out), card={
        "prior": f"backbone trained for {steps} steps on the {args.domain.upper()} channel of {args.train} "
                 f"(dev_ablations.py prior; attention levels {levels}); streams untrained"})
    print(f"prior: {steps} backbone steps on {args.domain} in {time.perf_counter() - t0:.0f} s -> {args.out}",
          flush=True)
    return 0


def _set_attention_levels(unet, levels: str) -> None:
    """``levels``: one 0/1 per UNet level (e.g. ``0,1,1``); a level that gains attention gets the widest
    head size the foundation uses, so the heads stay the foundation's size (the adaptive and semantic
    streams attach to every attention block, so this sets how many blocks they reach)."""
    values = [v.strip() for v in levels.split(",")]
    if len(values) != len(unet.channels) or not set(values) <= {"0", "1"} or "1" not in values:
        raise SystemExit(f"--attention-levels needs {len(unet.channels)} comma-separated 0/1 values, one set")
    flags = [v == "1" for v in values]
    head = max(unet.num_head_channels)
    unet.attention_levels = flags
    unet.num_head_channels = [head if f else 0 for f in flags]


def export(args) -> int:
    """Save one finished ``run`` training (its checkpoint in ``--work``) as a demist model directory.

    A development run lives only as a stage checkpoint; a candidate that earns a test cohort must also
    run where users run it (``score --model``, ``demist-evaluate``, the participant level), so it needs a
    model directory: the foundation's autoencoders, latent statistics and backbone with the run's
    streams, exactly the weights the run scored. Its default sampler is the paper's (pure noise, ``--steps`` DDIM steps,
    ``--guidance``, fp32, no blend towards z_c, as the ``order`` grid samples). Refuses (exit 2) a run
    whose training has not finished: reloading must not train.
    """
    import torch

    from demist_bids.models.config import AnchorConfig
    from demist_bids.models.io import load_model, save_model
    from demist_bids.training.engine import DONE_NAME
    from demist_bids.training.recipes import load_recipe

    torch.set_num_threads(args.threads)
    foundation = load_model(Path(args.foundation), device="cpu")
    recipe = load_recipe(foundation.config.preset, Path(args.recipe))
    steps = recipe.steps["diffusion"]
    stage = Path(args.work) / f"diffusion-{args.method}"
    done = stage / DONE_NAME  # the training engine's own mark of a finished stage
    if not done.exists() or json.loads(done.read_text()).get("steps") != steps:
        print(f"dev_ablations export: {stage} holds no finished {steps}-step training of {args.method}",
              file=sys.stderr)
        return 2
    model = train_method(args.method, foundation, recipe, unpack(Path(args.train)), steps, args.seed, "cpu",
                         Path(args.work), args.token_stride, True, args.lora_rank, args.init_seed,
                         args.backbone_steps)
    sampling = model.config.sampling
    sampling.sampler, sampling.steps, sampling.start, sampling.guidance, sampling.precision = (
        "ddim", args.steps, 1.0, args.guidance, "fp32")
    model.config.anchor = AnchorConfig()  # no blend towards z_c: the paper's sampler
    save_model(model, Path(args.out), card={
        "method": args.method, "seed": args.seed, "recipe": dataclasses.asdict(recipe),
        "autoencoders": f"from the demist model {args.foundation} (not trained here)",
        "backbone": (f"the backbone of {args.foundation}, fine-tuned {args.backbone_steps} steps on the recipe's "
                     "schedule" if args.backbone_steps else f"the frozen backbone of {args.foundation}"),
        "streams": f"{steps} diffusion-stage steps by benchmarks/dev_ablations.py run (training seed {args.seed}, "
                   f"recipe {args.recipe}); exported from {stage}",
    })
    print(f"exported {args.method} (seed {args.seed}) -> {args.out}", flush=True)
    return 0


# -- one method: train its streams, then score it ----------------------------------------------
def train_method(method: str, foundation, recipe, train_volumes, steps: int, seed: int, device, work: Path,
                 token_stride: int | None = None, resume: bool = False, lora_rank: int | None = None,
                 init_seed: int | None = None, backbone_steps: int = 0):
    """The train level's ``_diffusion_model`` for ``method`` on the foundation's networks
    (``token_stride``: the semantic tokens' layout, default the foundation's; ``lora_rank``: the adaptive
    stream's rank, its alpha scaled with it so alpha / rank stays the foundation's; ``resume``: continue from, or
    reload, the stage's checkpoint in ``work``). ``seed`` draws the data (the patches, the diffusion noise and
    timesteps); ``init_seed`` (default ``seed``) the streams' initial weights, so the two can be varied apart;
    ``backbone_steps``: first fine-tune the foundation's backbone that many steps (the ``backbone`` stage, on the
    recipe's schedule; 0: the foundation's backbone as it is)."""
    import torch

    from demist_bids.models.config import ABLATIONS, ModelConfig
    from demist_bids.models.demist import build_model
    from demist_bids.models.unet import load_plain_state_dict, plain_state_dict
    from demist_bids.training.checkpoints import TerminationFlag
    from demist_bids.training.distributed import DistributedContext
    from demist_bids.training.patches import PatchSampler
    from demist_bids.training.recipes import METHOD_ABLATION, METHODS
    from demist_bids.training.stages import StageRun, apply_latent_statistics, train_backbone, train_streams

    psr_scale = foundation.config.psr_scale
    # the foundation's architecture (for a train-level model: its preset) with the method's stream switches;
    # not its blend towards z_c, fitted on the foundation's own streams (until session 32 it came along)
    inherited = {k: v for k, v in foundation.config.to_dict().items() if k != "anchor"}
    config = ModelConfig.from_dict({**inherited, "card": {}, "patch_size": list(recipe.patch_size),
                                    "sampling": {"sampler": "ddim", "steps": 20, "start": 1.0, "precision": "fp32"}})
    config.streams = dataclasses.replace(config.streams, **ABLATIONS[METHOD_ABLATION[method]],
                                         condition_skip=recipe.condition_skip)
    if recipe.terminal_snr is not None:  # the foundation's backbone keeps its own training (see backbone_steps)
        config.schedule = dataclasses.replace(config.schedule, terminal_snr=recipe.terminal_snr)
    if token_stride is not None:
        config.streams.token_stride = token_stride
    if lora_rank is not None:
        streams = config.streams
        streams.lora_alpha, streams.lora_rank = streams.lora_alpha * lora_rank / streams.lora_rank, lora_rank
    apply_latent_statistics(config, foundation.config)
    # fold "all" (index -1): seed + 100 * 0 + index
    torch.manual_seed((seed if init_seed is None else init_seed) + METHODS.index(method))
    model = build_model(config).to(device)
    model.psr_autoencoder.load_state_dict(foundation.psr_autoencoder.state_dict())
    model.cond_autoencoder.load_state_dict(foundation.cond_autoencoder.state_dict())
    load_plain_state_dict(model.backbone, plain_state_dict(foundation.backbone))
    if backbone_steps:
        train_backbone(model, StageRun(PatchSampler(train_volumes, recipe.patch_size, psr_scale, seed=seed, rank=0),
                                       recipe, work / "backbone", backbone_steps, DistributedContext(),
                                       TerminationFlag(), resume, seed, torch.device(device)))
    model.sync_controlnet_from_backbone()
    model.freeze_backbone()
    sampler = PatchSampler(train_volumes, recipe.patch_size, psr_scale, seed=seed, rank=0)
    run = StageRun(sampler, recipe, work / f"diffusion-{method}", steps, DistributedContext(), TerminationFlag(),
                   resume, seed, torch.device(device))
    train_streams(model, run, name=f"diffusion-{method}")
    model.eval()
    return model


def _in_box(fn, cond: np.ndarray, psr: np.ndarray, brain: np.ndarray) -> list:
    """``fn(cond, psr)``'s maps (mean, std or None, unclipped map or None) for the brain's box, pasted on the
    full grid (``psr``: the measured map, which only the truth-noised rows read)."""
    from demist_bids.training.heldout import brain_box

    box = brain_box(brain)
    pasted = []
    for image in fn(np.ascontiguousarray(cond[(slice(None), *box)]), np.ascontiguousarray(psr[box])):
        full = None
        if image is not None:
            full = np.zeros(brain.shape, np.float32)
            full[box] = image
        pasted.append(full)
    return pasted


def _clipped(raw: np.ndarray, psr_scale: float) -> np.ndarray:
    """An unclipped map (``clamp=False``, PSR units) clipped as the sampler clips it: the same map to the digit."""
    return np.clip(raw, 0, np.float32(psr_scale))


def error_structure(prediction: np.ndarray, truth: np.ndarray, brain: np.ndarray, affine) -> dict[str, float]:
    """The error's structure and the two oracles of :data:`FIELDS`; no affine: demist's 1 mm grid."""
    from scipy import ndimage
    from scipy.stats import spearmanr

    zooms = np.ones(3) if affine is None else np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    sigma = SMOOTH_SIGMA_MM / np.where(zooms > 0, zooms, 1.0)
    weight = np.maximum(ndimage.gaussian_filter(brain.astype(np.float64), sigma), 1e-6)

    def smoothed(image):
        return ndimage.gaussian_filter(np.where(brain, image, 0.0).astype(np.float64), sigma) / weight

    error = np.where(brain, prediction - truth, 0.0).astype(np.float64)
    total = float(np.mean(error[brain] ** 2))
    size = np.abs(error)[brain]
    deciles = np.digitize(truth[brain], np.quantile(truth[brain], np.linspace(0.1, 0.9, 9)))
    per_decile = np.bincount(deciles, weights=size, minlength=10) / np.maximum(np.bincount(deciles, minlength=10), 1)
    return {"bias": float(error[brain].mean()),
            "smooth_share": float(np.mean(smoothed(error)[brain] ** 2)) / total if total > 0 else float("nan"),
            "oracle_smooth": float(spearmanr(size, smoothed(np.abs(error))[brain]).statistic),
            "oracle_level": float(spearmanr(size, per_decile[deciles]).statistic)}


def row_label(entry, unconditional: str = "backbone", sample_seed: int = 0) -> str:
    """The row name of one grid entry: pure noise (steps, samples, guidance[, anchor[, noise_scale]]) or the
    noised truth ("truth", t, guidance)."""
    if entry[0] == "truth":
        return f"truth-t{entry[1]}-g{entry[2]:g}" + _suffixes(unconditional, entry[2], sample_seed)
    if entry[0] == "latent":
        return f"latent-noise{entry[1]:g}" + (f"-s{sample_seed}" if sample_seed else "")
    if entry[0] == "ddpm":
        return f"ddpm{entry[1]}x{entry[2]}-g{entry[3]:g}" + _suffixes(unconditional, entry[3], sample_seed)
    if entry[0] == "interval":
        return (f"ddim{entry[1]}x{entry[2]}-g{entry[3]:g}@t{entry[4]}-{entry[5]}"
                + _suffixes(unconditional, entry[3], sample_seed))
    label = f"ddim{entry[0]}x{entry[1]}-g{entry[2]:g}" + ("-anchored" if entry[3:] and entry[3] else "")
    label += f"-e{entry[4]:g}" if entry[4:] and entry[4] != 1 else ""
    return label + _suffixes(unconditional, entry[2], sample_seed)


def scalable(grid) -> bool:
    """Whether ``--noise-scale`` applies to ``grid``: pure-noise chains only, none with a scale of its own."""
    return all(isinstance(entry[0], int) and not entry[4:] for entry in grid)


def scaled(grid, noise_scale: float) -> list:
    """``grid`` (:func:`scalable`) with every chain's noise estimates divided by ``noise_scale``; 1: as is."""
    if noise_scale == 1:
        return list(grid)
    return [(*entry[:3], bool(entry[3:4] and entry[3]), noise_scale) for entry in grid]


def _suffixes(unconditional: str, guidance: float, sample_seed: int) -> str:
    """What a sampled row adds to its name: its guidance branch, and its sampling seed when not the default
    0 (so that two draws of one row can be read side by side without mixing)."""
    return _branch_suffix(unconditional, guidance) + (f"-s{sample_seed}" if sample_seed else "")


def _branch_suffix(unconditional: str, guidance: float) -> str:
    """What a guided row adds to its name when its unconditional branch is the adapted backbone
    (``SamplingConfig.unconditional``); unguided rows do not depend on the branch."""
    return "-adapted" if unconditional == "adapted" and guidance != 1 else ""


def score_method(method: str, model, dev_volumes, grid, device: str, out: Path,
                 own_sampler: bool | str = False, sample_seed: int = 0) -> None:
    """Append one row per (sampler row, scan) to ``out``; ``own_sampler``: the model's stored sampler in its
    own precision, bf16 and fp32 instead of the legacy start-from-z_c default; ``"stored"``: in its own
    precision only; ``"spread"``: that sampler in
    its own precision, one sample and the mean of :data:`SPREAD_SAMPLES` (issue 16, target 2).
    ``sample_seed`` seeds the default and pure-noise rows' noise (the model's own rows keep seed 0)."""
    from scipy.stats import spearmanr

    from demist_bids.inference.sampler import decode_condition, estimate_from_truth, reconstruct_psr, synthesize
    from demist_bids.training.heldout import ScanRegions, measure_prediction

    stored_interval = model.config.sampling.guidance_interval

    def pure_noise(steps, samples, guidance, anchor=False, noise_scale=1.0, sampler="ddim", interval=None):
        def fn(cond, psr):
            model.config.sampling.guidance = guidance
            model.config.sampling.guidance_interval = interval
            model.config.sampling.noise_scale = noise_scale
            r = synthesize(model, cond, sampler=sampler, steps=steps, samples=samples, seed=sample_seed,
                           device=device, start=1.0, precision="fp32", anchor=anchor, clamp=samples > 1)
            if samples > 1:
                return r.mean, r.std, None
            return _clipped(r.mean, model.config.psr_scale), None, r.mean
        return fn

    def noised_truth(timestep, guidance):
        def fn(cond, psr):
            model.config.sampling.guidance = guidance
            model.config.sampling.guidance_interval = None
            model.config.sampling.noise_scale = 1.0
            # no blend towards z_c, as the pure-noise chains it is read beside (sessions 22-31 had the
            # foundation's blend here: benchmarks/README, session 32)
            return estimate_from_truth(model, cond, psr, timestep, seed=sample_seed, device=device,
                                       precision="fp32", anchor=False), None, None
        return fn

    def noised_latent(std):
        def fn(cond, psr):
            raw = reconstruct_psr(model, psr, device=device, precision="fp32", latent_noise=std, seed=sample_seed,
                                  clamp=False)
            return _clipped(raw, model.config.psr_scale), None, raw
        return fn

    def default(cond, psr):
        model.config.sampling.guidance = 1.5
        model.config.sampling.guidance_interval = None
        model.config.sampling.noise_scale = 1.0
        r = synthesize(model, cond, sampler="ddim", steps=2, samples=1, seed=sample_seed, device=device,
                       start=0.15, precision="fp32", anchor=False)
        return r.mean, None, None

    sampling = model.config.sampling
    guidance, noise_scale = float(sampling.guidance), float(sampling.noise_scale)

    def own(precision, samples=1):
        def fn(cond, psr):
            model.config.sampling.guidance = guidance
            model.config.sampling.guidance_interval = stored_interval
            model.config.sampling.noise_scale = noise_scale
            r = synthesize(model, cond, sampler=sampling.sampler, steps=int(sampling.steps), samples=samples,
                           seed=0, device=device, start=float(sampling.start), precision=precision)
            return r.mean, r.std, None
        return fn

    def no_diffusion(cond, psr):
        raw = decode_condition(model, cond, device=device, precision="fp32", clamp=False)
        return _clipped(raw, model.config.psr_scale), None, raw

    rows = [("no-diffusion", no_diffusion)]
    label = f"own-{sampling.sampler}{sampling.steps}-g{guidance:g}"
    if own_sampler == "spread":
        rows += [(f"{label}x{n}@{sampling.precision}", own(sampling.precision, n)) for n in (1, SPREAD_SAMPLES)]
    elif own_sampler == "stored":
        rows.append((f"{label}@{sampling.precision}", own(sampling.precision)))
    elif own_sampler:
        rows += [(f"{label}@{p}", own(p)) for p in dict.fromkeys([sampling.precision, "bf16", "fp32"])]
    else:
        rows.append(("default-2@0.15-g1.5" + _suffixes(sampling.unconditional, 1.5, sample_seed), default))
    builders = {"truth": noised_truth, "latent": noised_latent, "ddpm": functools.partial(pure_noise, sampler="ddpm"),
                "interval": lambda steps, samples, guidance, lo, hi: pure_noise(steps, samples, guidance,
                                                                                 interval=[lo, hi])}
    rows += [(row_label(entry, sampling.unconditional, sample_seed),
              builders[entry[0]](*entry[1:]) if entry[0] in builders else pure_noise(*entry)) for entry in grid]
    regions = {v.name: ScanRegions.of(v) for v in dev_volumes}
    for row, fn in rows:
        for v in dev_volumes:
            t0 = time.perf_counter()
            mean, std, raw = _in_box(fn, v.cond, v.psr, v.brain)
            mean = np.where(v.brain, mean, 0)
            raw_bias = float("nan") if raw is None else float((raw - v.psr)[v.brain].astype(np.float64).mean())
            values = measure_prediction(mean, v, model.config.psr_scale, regions[v.name]).values
            rho = spread = float("nan")
            if std is not None:
                rho = float(spearmanr(std[v.brain], np.abs(mean - v.psr)[v.brain]).statistic)
                spread = float(std[v.brain].mean())
            record = {"method": method, "row": row, "scan": v.name, "psnr": values["psnr"], "ssim": values["ssim"],
                      "auc_combined": values.get("auc_combined", float("nan")),
                      "lesion_auc": values.get("lesion_auc_combined", values.get("lesion_auc", float("nan"))),
                      "spearman_std_err": rho, "seconds": time.perf_counter() - t0, "mean_std": spread,
                      "raw_bias": raw_bias,
                      **error_structure(mean, v.psr, v.brain, v.affine)}
            with out.open("a", newline="") as handle:
                csv.DictWriter(handle, FIELDS, delimiter="\t").writerow(record)


def score(args) -> int:
    """Score one trained model (no training) on the development scans: ``OUT/rows-<label>.tsv``."""
    import torch

    from demist_bids.models.io import load_model

    torch.set_num_threads(args.threads)
    model = load_model(Path(args.model), device=args.device)
    if model.config.sampling.sampler == "distilled":
        print(f"{args.model} recommends its student: score the student/ directory itself", file=sys.stderr)
        return 2
    if GRIDS[args.grid] and any(entry[3:4] and entry[3] for entry in GRIDS[args.grid]) and not model.anchored:
        print(f"{args.model} has no fitted blend towards z_c (scripts/fit_anchor.py)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    own = {"own": True, "own-stored": "stored", "spread": "spread"}.get(args.grid, False)
    score_method(args.label, model, unpack(Path(args.dev), args.scans), GRIDS[args.grid], args.device,
                 out / f"rows-{args.label}.tsv", own_sampler=own)
    line = summarize(out)
    if args.grid == "spread":
        line = spread_verdict(out / f"rows-{args.label}.tsv")
    print(line, flush=True)
    return 0


def spread_verdict(rows: Path) -> str:
    """Issue 16 target 2 from a ``--grid spread`` rows file: the mean of several samples against one, and
    the Spearman correlation of their per-voxel std with the absolute error (target >= 0.4)."""
    import pandas as pd

    table = pd.read_csv(rows, sep="\t", names=FIELDS)
    own = table[table.row.str.startswith("own-")]
    one = own[own.row.str.contains("x1@")].set_index("scan")
    several = own[~own.row.str.contains("x1@")].set_index("scan")
    scans = one.index.intersection(several.index)
    better = int((several.loc[scans, "psnr"] > one.loc[scans, "psnr"]).sum())
    rho = float(several.loc[scans, "spearman_std_err"].mean())
    single, mean = float(one.loc[scans, "psnr"].mean()), float(several.loc[scans, "psnr"].mean())
    nodiff = table[table.row == "no-diffusion"]
    return (f"one_sample_psnr_db={single:.3f} mean_of_{SPREAD_SAMPLES}_psnr_db={mean:.3f} better={better}/{len(scans)} "
            f"spearman_std_err={rho:.3f} target2_met={mean > single and rho >= 0.4} "
            f"mean_std={several.loc[scans, 'mean_std'].mean():.5f} "
            f"smooth_share={own.smooth_share.mean():.2f} nodiff_smooth_share={nodiff.smooth_share.mean():.2f} "
            f"oracle_smooth={several.loc[scans, 'oracle_smooth'].mean():.3f} "
            f"oracle_level={several.loc[scans, 'oracle_level'].mean():.3f}")


def level_free_psnr(psnr, bias, psr_scale: float):
    """PSNR with the scan's level offset taken out of its squared error (a diagnostic, not target 4's measure).

    Every row's PSNR is on PSR / psr_scale with a data range of 1, and ``bias`` is the mean signed error
    inside the brain in PSR units, so the error's mean contributes (bias / psr_scale)^2 to the MSE; what is
    left is the error about the scan's own level. Session 21 found that offset carrying most of the spread
    between training seeds of one method."""
    return levelled_psnr(psnr, bias, 0.0, psr_scale)


def levelled_psnr(psnr, bias, reference_bias, psr_scale: float):
    """PSNR with the scan's level offset ``bias`` replaced by ``reference_bias`` (both PSR units, the mean
    signed error inside the brain): what a row would score if its level were another row's, e.g. no
    diffusion's. Same convention as :func:`level_free_psnr`."""
    mse = np.power(10.0, -np.asarray(psnr, dtype=float) / 10.0)
    shift = (np.asarray(reference_bias, dtype=float) ** 2 - np.asarray(bias, dtype=float) ** 2) / psr_scale**2
    return 10.0 * np.log10(1.0 / (mse + shift))


def error_parts(rows, psr_scale: float) -> tuple[float, float]:
    """The rows' mean squared error (on PSR / psr_scale, as the PSNR) split by ``smooth_share``: the smooth
    part less the level's square (what a 4 mm smoothing keeps besides the scan's offset), and the fine part
    (what it removes). Approximate: the cross term of the two parts is left out."""
    mse = np.power(10.0, -rows["psnr"].to_numpy(float) / 10.0)
    share = rows["smooth_share"].to_numpy(float)
    level = (rows["bias"].to_numpy(float) / psr_scale) ** 2
    return float(np.mean(mse * share - level)), float(np.mean(mse * (1 - share)))


def read_rows(*folders) -> "pd.DataFrame":
    """Every non-empty ``rows-*.tsv`` the workers wrote in ``folders`` (no header; :data:`FIELDS`), as one
    table; empty (with those columns) when there is none."""
    import pandas as pd

    files = [f for folder in folders for f in sorted(Path(folder).glob("rows-*.tsv")) if f.stat().st_size]
    if not files:
        return pd.DataFrame(columns=FIELDS)
    return pd.concat([pd.read_csv(f, sep="\t", names=FIELDS) for f in files])


def levelled(args) -> int:
    """Each run's ``--row`` beside no diffusion, and with its level set to no diffusion's (session 23): how much
    of the gap to no diffusion a level correction alone could close, and where the rest lies (the ratios of
    :func:`error_parts` to no diffusion's). One line per run, then a summary."""
    within = 0
    for folder in args.runs:
        table = read_rows(folder)
        if table.empty:
            print(f"dev_ablations levelled: {folder} has no rows-*.tsv with rows", file=sys.stderr)
            return 2
        for method, rows in table.groupby("method", sort=False):
            chain = rows[rows.row == args.row].set_index("scan")
            nodiff = rows[rows.row == "no-diffusion"].set_index("scan")
            scans = chain.index.intersection(nodiff.index)
            if scans.empty or chain.loc[scans, "bias"].isna().any():
                continue
            moved = levelled_psnr(chain.loc[scans, "psnr"], chain.loc[scans, "bias"], nodiff.loc[scans, "bias"],
                                  args.psr_scale)
            gap = float(moved.mean() - nodiff.loc[scans, "psnr"].mean())
            within += gap >= -args.margin
            (smooth, fine), (smooth_nd, fine_nd) = (error_parts(t.loc[scans], args.psr_scale) for t in (chain, nodiff))
            print(f"{folder} {method} {args.row} scans={len(scans)} psnr_db={chain.loc[scans, 'psnr'].mean():.2f} "
                  f"nodiff_db={nodiff.loc[scans, 'psnr'].mean():.2f} levelled_db={moved.mean():.2f} "
                  f"levelled_gap_db={gap:+.2f} smooth_ratio={smooth / smooth_nd:.2f} "
                  f"fine_ratio={fine / fine_nd:.2f}", flush=True)
    print(f"within_{args.margin:g}_db={within}", flush=True)
    return 0


def seed_verdict(runs: dict[str, list[Path]], row: str, scans: int | None = None,
                 margin_db: float = 0.3, psr_scale: float | None = None) -> tuple[str, "pd.DataFrame"]:
    """Two methods compared over training seeds: one score per run, not per scan.

    ``runs`` maps each of two methods to the ``run`` output folders of its replicates (one training seed
    each; every folder holds that method's ``rows-<method>.tsv``). A run's score is ``row``'s PSNR
    averaged over its first ``scans`` scans (all shared scans when None). The first method beats the
    second if its mean over runs is at least ``margin_db`` higher **and** every one of its runs scores above
    every run of the second (exact one-sided Mann-Whitney; with 3 + 3 runs its smallest p, 0.05). Session
    19 found one training run's pure-noise PSNR spreading by about 3 dB between seeds, so a single run per
    method cannot say which method is better. With ``psr_scale`` (the model's, which every row's PSNR
    divided PSR by) a scan's score is :func:`level_free_psnr` instead. Returns the verdict line and the
    per-run scores."""
    import pandas as pd
    from scipy import stats

    first, second = runs
    frames = []
    for method, dirs in runs.items():
        for k, folder in enumerate(dirs):
            table = pd.read_csv(Path(folder) / f"rows-{method}.tsv", sep="\t", names=FIELDS)
            table = table[(table.method == method) & (table.row == row)]
            if table.empty:
                raise ValueError(f"{folder}: no {row!r} rows for {method}")
            frames.append(table.assign(run=f"{method}#{k}", folder=str(folder)))
    rows = pd.concat(frames)
    shared = sorted(set.intersection(*(set(g.scan) for _, g in rows.groupby("run"))))
    shared = shared[:scans] if scans else shared
    if not shared:
        raise ValueError("the runs share no scan")
    rows = rows[rows.scan.isin(shared)]
    if psr_scale is not None and rows.bias.isna().any():
        raise ValueError("a level-free score needs every row's bias; some runs' rows have none")
    rows = rows.assign(score=rows.psnr if psr_scale is None else level_free_psnr(rows.psnr, rows.bias, psr_scale))
    per_run = rows.groupby(["method", "run", "folder"], sort=False).agg(
        score=("score", "mean"), bias=("bias", "mean")).reset_index()
    a = per_run[per_run.method == first].score.to_numpy()
    b = per_run[per_run.method == second].score.to_numpy()
    gap = float(a.mean() - b.mean())
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(var_a + var_b))
    dof = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1)) if se > 0 else np.inf
    half = float(stats.t.ppf(0.975, dof) * se)
    p_value = float(stats.mannwhitneyu(a, b, alternative="greater", method="exact").pvalue)
    holds = gap >= margin_db and bool(a.min() > b.max())
    line = (f"{first}_db={a.mean():.3f} {first}_sd={a.std(ddof=1):.3f} {second}_db={b.mean():.3f} "
            f"{second}_sd={b.std(ddof=1):.3f} gap_db={gap:+.3f} welch95=[{gap - half:+.3f},{gap + half:+.3f}] "
            f"mannwhitney_p={p_value:.3f} runs={len(a)}+{len(b)} scans={len(shared)} "
            f"measure={'psnr' if psr_scale is None else 'level_free'} holds={holds}")
    return line, per_run


def seeds(args) -> int:
    """``seeds``: the seed-replicate comparison of two methods (``seed_verdict``)."""
    runs = {}
    for spec in (args.a, args.b):
        method, _, folders = spec.partition("=")
        runs[method] = [Path(f) for f in folders.split(",") if f]
    if len(runs) != 2 or any(len(d) < 2 for d in runs.values()):
        print("dev_ablations seeds: give two different methods, each as METHOD=OUT1,OUT2[,...] (two runs or more)",
              file=sys.stderr)
        return 2
    line, per_run = seed_verdict(runs, args.row, args.scans, args.margin, args.psr_scale)
    print(per_run.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(line, flush=True)
    return 0


def paired_difference(a: "pd.Series", b: "pd.Series") -> dict:
    """``a - b`` over the scans where both have a value (the lesion-level AUC is missing on scans without
    lesions): the mean difference, how many scans lie above, level and below, and the paired t-test's and
    Wilcoxon signed-rank test's two-sided p (NaN where every difference is zero)."""
    import pandas as pd
    from scipy import stats

    both = pd.concat([a, b], axis=1, keys=["a", "b"]).dropna()
    d = both["a"] - both["b"]
    varied = bool((d != 0).any()) and len(d) > 1
    return {"diff": float(d.mean()) if len(d) else float("nan"), "above": int((d > 0).sum()),
            "equal": int((d == 0).sum()), "below": int((d < 0).sum()), "scans": len(d),
            "t_p": float(stats.ttest_rel(both["a"], both["b"]).pvalue) if varied else float("nan"),
            "wilcoxon_p": float(stats.wilcoxon(both["a"], both["b"]).pvalue) if varied else float("nan")}


def _scan_rows(spec: str) -> "pd.DataFrame":
    """One ``LABEL:ROW=OUT1[,OUT2]`` of ``paired``: that method's row, one line per scan, from every
    ``rows-*.tsv`` in the folders. Raises ValueError on a malformed spec, no rows, or a scan twice."""
    name, _, folders = spec.partition("=")
    label, _, row = name.partition(":")
    if not (label and row and folders):
        raise ValueError(f"{spec!r} is not LABEL:ROW=OUT[,OUT...]")
    table = read_rows(*(folder for folder in folders.split(",") if folder))
    table = table[(table.method == label) & (table.row == row)]
    if table.empty:
        raise ValueError(f"no {row!r} rows of {label!r} in {folders}")
    if table.scan.duplicated().any():
        raise ValueError(f"{label} {row}: a scan appears twice in {folders}")
    return table.set_index("scan")


def paired(args) -> int:
    """``paired``: two rows compared scan by scan (PSNR and lesion-level AUC), as issue 16's target 1 asks
    ("paired tests over scans reported"). One line per measure. With ``--psr-scale`` also the level-free
    PSNR (:func:`level_free_psnr`): session 27 found a pure-noise row's PSNR gain over no diffusion to be
    a shift of the scan's mean level, which this measure leaves out."""
    try:
        a, b = _scan_rows(args.a), _scan_rows(args.b)
    except ValueError as err:
        print(f"dev_ablations paired: {err}", file=sys.stderr)
        return 2
    shared = a.index.intersection(b.index)
    if shared.empty:
        print("dev_ablations paired: the two rows share no scan", file=sys.stderr)
        return 2
    measures = ["psnr", "lesion_auc"]
    if args.psr_scale:
        for table in (a, b):
            table["psnr_level_free"] = level_free_psnr(table["psnr"], table["bias"], args.psr_scale)
        measures.append("psnr_level_free")
    for measure in measures:
        r = paired_difference(a.loc[shared, measure].astype(float), b.loc[shared, measure].astype(float))
        print(f"measure={measure} diff={r['diff']:+.4f} above={r['above']} equal={r['equal']} "
              f"below={r['below']} scans={r['scans']} t_p={r['t_p']:.3g} wilcoxon_p={r['wilcoxon_p']:.3g}",
              flush=True)
    return 0


def worker(args) -> int:
    import torch

    from demist_bids.models.io import load_model
    from demist_bids.training.recipes import load_recipe

    torch.set_num_threads(args.threads)
    foundation = load_model(Path(args.foundation), device=args.device)
    dev = unpack(Path(args.dev), args.scans)
    out = Path(args.out) / f"rows-{args.method}.tsv"
    if args.method == "foundation":
        model, grid = foundation, GRIDS[args.grid]
    else:
        recipe = load_recipe(foundation.config.preset, Path(args.recipe))
        if args.lora_b_lr_multiplier is not None:
            recipe = dataclasses.replace(recipe, lora_b_lr_multiplier=args.lora_b_lr_multiplier)
        steps = args.steps or recipe.steps["diffusion"]
        t0 = time.perf_counter()
        model = train_method(args.method, foundation, recipe, unpack(Path(args.train)), steps, args.seed,
                             args.device, Path(args.work), args.token_stride, args.resume, args.lora_rank,
                             args.init_seed, args.backbone_steps)
        how = "trained or reloaded (--resume)" if args.resume else "trained"
        print(f"{args.method}: {steps} diffusion steps {how} in {time.perf_counter() - t0:.0f} s", flush=True)
        grid = GRIDS[args.grid] if args.method == "demist" or args.grid != "full" else GRIDS["ablation"]
    grid = scaled(grid, args.noise_scale)
    if args.sdpa:
        _always_sdpa(model)
    model.config.sampling.unconditional = args.unconditional
    score_method(args.method, model, dev, grid, args.device, out, sample_seed=args.sample_seed)
    return 0


def _always_sdpa(model) -> None:
    """Score with torch's fused attention on any device (the sampler enables it on CUDA only). With
    self-attention at a finer UNet level a whole-brain latent has ~17k tokens per block, where the
    unfused attention the CPU path uses measured ~11x slower (one thread); the inference plan is
    unchanged and the noise prediction agrees to float32 rounding."""
    enable = type(model).use_sdpa
    enable(model, True)
    model.use_sdpa = lambda enabled=True: enable(model, True)


# -- the whole run --------------------------------------------------------------------------------
def summarize(out: Path, paper_row: str = row_label(GRIDS["order"][0])) -> str:
    """The means of every rows file in ``out``; ``order_ok``: target 4's order on ``paper_row``."""
    table = read_rows(out)
    if table.empty:
        return "best_pure_noise=none psnr_db=nan nodiff_psnr_db=nan order_ok=False"
    table.to_csv(out / "rows.tsv", sep="\t", index=False)
    means = table.groupby(["method", "row"]).agg(
        psnr=("psnr", "mean"), ssim=("ssim", "mean"), auc=("auc_combined", "mean"),
        lesion_auc=("lesion_auc", "mean"), spearman=("spearman_std_err", "mean"), scans=("scan", "count"),
        seconds=("seconds", "mean")).reset_index()
    means.to_csv(out / "summary.tsv", sep="\t", index=False, float_format="%.4f")
    print(means.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    demist = means[means.method == "demist"]
    noise = demist[demist.row.str.startswith("ddim")]
    paper = means[means.row == paper_row].set_index("method").psnr
    order_ok = all(m in paper for m in METHODS_TRAINED) and bool(
        paper["demist"] > max(paper["controlnet"], paper["lora"]) and min(paper["controlnet"], paper["lora"]) > paper["ftldm"])
    nodiff = demist[demist.row == "no-diffusion"].psnr
    if noise.empty:
        return f"best_pure_noise=none psnr_db=nan nodiff_psnr_db={nodiff.mean():.2f} order_ok={order_ok}"
    best = noise.loc[noise.psnr.idxmax()]
    return (f"best_pure_noise={best.row} psnr_db={best.psnr:.2f} nodiff_psnr_db={nodiff.mean():.2f} "
            f"order_ok={order_ok}")


def run(args) -> int:
    known = (*METHODS_TRAINED, "foundation")
    unknown = [m for m in args.methods.split(",") if m not in known] if args.methods else []
    if unknown:
        print(f"dev_ablations: unknown --methods {','.join(unknown)}; expected some of {','.join(known)}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--foundation", args.foundation, "--dev", args.dev, "--train", args.train, "--recipe", args.recipe,
              "--out", str(out), "--work", str(work), "--device", args.device, "--grid", args.grid,
              "--seed", str(args.seed), "--threads", str(args.threads)]
    if args.token_stride is not None:
        common += ["--token-stride", str(args.token_stride)]
    if args.lora_rank is not None:
        common += ["--lora-rank", str(args.lora_rank)]
    if args.lora_b_lr_multiplier is not None:
        common += ["--lora-b-lr-multiplier", str(args.lora_b_lr_multiplier)]
    if args.init_seed is not None:
        common += ["--init-seed", str(args.init_seed)]
    if args.backbone_steps:
        common += ["--backbone-steps", str(args.backbone_steps)]
    if args.sdpa:
        common += ["--sdpa"]
    common += ["--unconditional", args.unconditional, "--sample-seed", str(args.sample_seed),
               "--noise-scale", str(args.noise_scale)]
    if args.methods:
        common += ["--methods", args.methods]
    if args.resume:
        common.append("--resume")
    if args.steps:
        common += ["--steps", str(args.steps)]
    if args.scans:
        common += ["--scans", str(args.scans)]
    procs = {}
    for method in args.methods.split(",") if args.methods else (*METHODS_TRAINED, "foundation"):
        log = (work / f"{method}.log").open("w")
        procs[method] = (subprocess.Popen([sys.executable, "-u", __file__, "worker", "--method", method, *common],
                                          stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()), log)
    deadline = time.monotonic() + args.deadline if args.deadline else None
    while any(p.poll() is None for p, _ in procs.values()):
        if deadline and time.monotonic() > deadline:
            for p, _ in procs.values():
                p.kill()
            print("deadline reached: the workers were stopped; rows.tsv has what finished", flush=True)
            break
        time.sleep(2)
    codes = {m: p.wait() for m, (p, _) in procs.items()}
    for method, (_, log) in procs.items():
        log.close()
        text = (work / f"{method}.log").read_text()
        print(f"--- {method} (exit {codes[method]}) ---\n" + "\n".join(text.splitlines()[-6:]), flush=True)
    paper_row = scaled(GRIDS[args.grid], args.noise_scale)[0]
    print(summarize(out, row_label(paper_row, args.unconditional, args.sample_seed)), flush=True)
    return 0 if all(c == 0 for c in codes.values()) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="preprocess a phantom cohort and store its arrays")
    p.add_argument("--bids", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("score", help="score one trained model on the development scans (no training)")
    p.add_argument("--model", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--label", default="demist", help="the method column of its rows")
    p.add_argument("--grid", choices=sorted(GRIDS), default="anchored")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scans", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("seeds", help="two methods compared over training seeds (one score per run)")
    p.add_argument("--a", required=True, help="METHOD=OUT1,OUT2,...: the runs of the method that should win")
    p.add_argument("--b", required=True, help="METHOD=OUT1,OUT2,...: the runs it is compared against")
    p.add_argument("--row", default=row_label(GRIDS["order"][0]), help="the row compared (default: the paper's)")
    p.add_argument("--scans", type=int, default=0, help="the first K scans the runs share (0: all shared)")
    p.add_argument("--margin", type=float, default=0.3, help="the least gap of the means, dB")
    p.add_argument("--psr-scale", type=float, default=None,
                   help="score the level-free PSNR (the scan's mean error taken out) with this psr_scale "
                        "(the model's config.json); default: the PSNR itself")
    p = sub.add_parser("levelled", help="each run's row with its level set to no diffusion's")
    p.add_argument("runs", nargs="+", help="run or score output folders (their rows-*.tsv)")
    p.add_argument("--row", default=row_label(GRIDS["order"][0]), help="the row (default: the paper's)")
    p.add_argument("--psr-scale", type=float, required=True, help="the models' psr_scale (their config.json)")
    p.add_argument("--margin", type=float, default=0.3, help="how close to no diffusion counts as within, dB")
    p = sub.add_parser("paired", help="two rows compared scan by scan (PSNR and lesion-level AUC)")
    p.add_argument("--a", required=True, help="LABEL:ROW=OUT1[,OUT2,...]: the row that should be higher")
    p.add_argument("--b", required=True, help="LABEL:ROW=OUT1[,OUT2,...]: the row it is compared against")
    p.add_argument("--psr-scale", type=float, default=None,
                   help="the models' psr_scale (their config.json): adds the level-free PSNR")
    p = sub.add_parser("prior", help="a copy of the foundation with a backbone trained on another image domain")
    p.add_argument("--train", required=True)
    p.add_argument("--foundation", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--domain", choices=sorted(PRIOR_DOMAINS), default="flair")
    p.add_argument("--work", default="/tmp/dev_ablations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=0, help="backbone steps (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from the stage's checkpoint in --work")
    p.add_argument("--attention-levels", default="",
                   help="self-attention per UNet level, e.g. 0,1,1 (default: the foundation's); the streams "
                        "reach every attention block")
    p = sub.add_parser("export", help="one finished run training as a model directory (the paper's sampler)")
    p.add_argument("--train", required=True)
    p.add_argument("--foundation", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=METHODS_TRAINED, default="demist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-seed", type=int, default=None)
    p.add_argument("--token-stride", type=int, default=None)
    p.add_argument("--lora-rank", type=int, default=None)
    p.add_argument("--steps", type=int, default=20, help="the default sampler's DDIM steps")
    p.add_argument("--backbone-steps", type=int, default=0, help="as for run")
    p.add_argument("--guidance", type=float, default=1.5, help="its classifier-free guidance")
    p.add_argument("--threads", type=int, default=2)
    for name in ("run", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--train", required=True)
        p.add_argument("--dev", required=True)
        p.add_argument("--foundation", required=True)
        p.add_argument("--recipe", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--work", default="/tmp/dev_ablations")
        p.add_argument("--device", default="cuda")
        p.add_argument("--steps", type=int, default=0, help="diffusion steps (default: the recipe's)")
        p.add_argument("--scans", type=int, default=0, help="score the first K development scans (0: all)")
        p.add_argument("--grid", default="full",
                       choices=["full", "ablation", "order", "order-g1", "steps", "guidance", "guidance-interval",
                                "guidance-low", "tiny", "level", "noise-scale", "truth-noised", "latent-noise",
                                "stochastic"],
                       help="demist's pure-noise grid; the other methods get 'ablation' under 'full', else this one")
        p.add_argument("--seed", type=int, default=0,
                       help="seed of the training data: patches, diffusion noise and timesteps (and, by default, "
                            "of the initial weights)")
        p.add_argument("--init-seed", type=int, default=None,
                       help="seed of the streams' initial weights when it should differ from --seed")
        p.add_argument("--backbone-steps", type=int, default=0,
                       help="fine-tune the foundation's backbone this many steps on the recipe's schedule (the "
                            "backbone stage) before the streams; 0: the foundation's backbone as it is")
        p.add_argument("--threads", type=int, default=3)
        p.add_argument("--deadline", type=float, default=0, help="stop the workers after this many seconds")
        p.add_argument("--token-stride", type=int, default=None,
                       help="semantic token layout of the trained methods (StreamsConfig.token_stride; "
                            "default: the foundation's)")
        p.add_argument("--lora-rank", type=int, default=None,
                       help="LoRA rank of the trained methods (StreamsConfig.lora_rank; alpha scaled with it; "
                            "default: the foundation's)")
        p.add_argument("--lora-b-lr-multiplier", type=float, default=None,
                       help="rate multiple of the adapters' zero-initialised factors B in the trained methods "
                            "(TrainingRecipe.lora_b_lr_multiplier; default: the recipe's)")
        p.add_argument("--sdpa", action="store_true",
                       help="score with torch's fused attention also on the CPU (for priors with attention at "
                            "finer levels; see _always_sdpa)")
        p.add_argument("--unconditional", choices=UNCONDITIONAL_BRANCHES, default="backbone",
                       help="the guidance's unconditional branch while scoring (SamplingConfig.unconditional); "
                            "guided rows get an -adapted suffix for 'adapted'")
        p.add_argument("--sample-seed", type=int, default=0,
                       help="seed of the sampler's noise while scoring (rows of a seed other than 0 get an -sN "
                            "suffix): the same checkpoints scored with several seeds give a row's sampling noise")
        p.add_argument("--noise-scale", type=float, default=1.0,
                       help="divide every pure-noise row's noise estimates by this (SamplingConfig.noise_scale; "
                            "rows get an -eX suffix); not with --grid noise-scale, which sets its own")
        p.add_argument("--methods", default="", help="comma-separated subset of "
                       f"{','.join((*METHODS_TRAINED, 'foundation'))} (default: all)")
        p.add_argument("--resume", action="store_true",
                       help="continue each method's training from its checkpoint in --work (a finished one is "
                            "only reloaded, so a stopped run can be scored without training again)")
        if name == "worker":
            p.add_argument("--method", required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.bids, args.work, args.cache, args.out)
        return 0
    if getattr(args, "scans", 0) == 0:
        args.scans = None
    if getattr(args, "noise_scale", 1.0) != 1.0 and not (args.noise_scale > 0 and scalable(GRIDS[args.grid])):
        print("dev_ablations: --noise-scale must be positive, and only for grids of pure-noise chains without "
              "scales of their own (not noise-scale, truth-noised, latent-noise or stochastic)", file=sys.stderr)
        return 2
    return {"run": run, "worker": worker, "score": score, "prior": prior, "seeds": seeds,
            "levelled": levelled, "export": export, "paired": paired}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
