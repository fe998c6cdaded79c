"""The ``train`` analysis level end to end: cohort, folds, stages, evaluation, model.

Output layout (``OUTPUT_DIR``)::

    folds.tsv                        subject -> held-out fold (seeded, reused on resume)
    cohort.json                      the preprocessed training files per scan
    training/fold-<k>/<stage>/       checkpoint.pt, log.csv, done.json per stage
    training/fold-<k>/models/<m>/    DEMIST and its ablations for fold k (model format), and
                                     unet-regressor/, the U-Net baseline (regressor stage)
    training/all/...                 the final model's stages, trained on every subject
    evaluation/                      TSVs, evaluation.html (Table 1, ROC curves)
    model/                           the final model (config.json + safetensors, README.md card)
    logs/config-<run_uuid>.toml      the settings of this run

With ``--folds 1`` there is no evaluation: the model is trained on everyone.
``--stage X`` runs stage X only, taking earlier stages from their finished
checkpoints. Only the main rank touches BIDS, Nipype and the output tables;
every rank trains.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from demist_bids.exceptions import MissingInputError, UsageError
from demist_bids.training.recipes import METHOD_ABLATION, METHODS, STAGES, capped, load_recipe
from demist_bids.workflows.cohort import VolumePaths

LOGGER = logging.getLogger("demist.train")
ORDER = (*STAGES, "eval")


def selected_stages(stage: str) -> set[str]:
    """Stages to run for ``--stage``."""
    if stage == "all":
        return set(ORDER)
    if stage == "distill":  # never part of "all": it starts from the exported model
        return {"distill"}
    if stage not in ORDER:
        raise UsageError(f"--stage {stage} is not a training stage; choose from all, {', '.join(ORDER)}")
    return {stage}


def _write_manifest(paths: list[VolumePaths], dest: Path) -> None:
    from demist_bids.utils.atomic import atomic_write_text

    rows = [{k: (str(v) if v is not None else None) for k, v in asdict(p).items()} for p in paths]
    atomic_write_text(dest, json.dumps(rows, indent=2) + "\n")


def _read_manifest(path: Path) -> list[VolumePaths]:
    rows = json.loads(Path(path).read_text())
    return [
        VolumePaths(**{k: (Path(v) if v is not None and k != "name" else v) for k, v in r.items()})
        for r in rows
    ]


def fold_index(fold_dir: Path) -> int:
    """Numeric id of a fold directory (``all`` is -1), for seeding."""
    name = Path(fold_dir).name
    return -1 if name == "all" else int(name.removeprefix("fold-"))


def _subject_of(name: str) -> str:
    return name.split("_")[0].removeprefix("sub-")


def _dataset_summary(bids_dir: Path) -> dict:
    """Name and provenance of the training dataset, and whether it is synthetic."""
    description = {}
    path = Path(bids_dir) / "dataset_description.json"
    if path.is_file():
        description = json.loads(path.read_text())
    generated = [g.get("Name", "") for g in description.get("GeneratedBy", []) if isinstance(g, dict)]
    text = " ".join([description.get("Name", ""), *generated]).lower()
    return {
        "name": description.get("Name", Path(bids_dir).name),
        "generated_by": generated,
        "synthetic": "phantom" in text or "synthetic" in text,
    }


def prepare_cohort(config, ctx) -> list[VolumePaths]:
    """Find and preprocess the training scans on the main rank; every rank reads the manifest."""
    from demist_bids.training.distributed import barrier

    out_dir = Path(config.execution.output_dir)
    manifest = out_dir / "cohort.json"
    if ctx.is_main:
        from demist_bids.workflows.cohort import find_training_scans, preprocess_cohort

        from demist_bids.bids import read_bids_filters

        bids_filter = None
        if config.execution.bids_filter_file:
            bids_filter = read_bids_filters(config.execution.bids_filter_file)
        scans = find_training_scans(
            config.execution.bids_dir,
            work_dir=config.execution.work_dir,
            participant_label=config.execution.participant_label,
            session_label=config.execution.session_label,
            bids_filter=bids_filter,
            derivatives=config.execution.derivatives,
            psr_derivatives=config.train.psr_derivatives,
            max_voxels=config.execution.max_image_voxels,
        )
        nprocs = config.nipype.nprocs or 1
        paths = preprocess_cohort(
            scans, work_dir=Path(config.execution.work_dir) / "train_preproc",
            omp_nthreads=config.nipype.omp_nthreads or 1, nprocs=nprocs,
            plugin=config.nipype.plugin, plugin_args=config.nipype.plugin_args,
        )
        _write_manifest(paths, manifest)
    barrier(ctx)
    return _read_manifest(manifest)


def run_train(config) -> int:
    """Entry point of ``demist BIDS_DIR OUTPUT_DIR train``; returns the exit code (0)."""
    import torch

    from demist_bids.utils.devices import resolve_device
    from demist_bids.training.checkpoints import TerminationFlag
    from demist_bids.training.distributed import init_distributed, shutdown_distributed

    device_name = resolve_device(config.synthesis.device)
    ctx = init_distributed("cuda" if device_name.startswith("cuda") else "cpu")
    if device_name.startswith("cuda"):
        device_name = f"cuda:{ctx.local_rank}"
    flag = TerminationFlag().install()
    try:
        out_dir = Path(config.execution.output_dir)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            config.to_filename(out_dir / "logs" / f"config-{config.execution.run_uuid}.toml")
        torch.manual_seed(config.seeds.master)
        trainer = CohortTrainer(config, ctx, flag, torch.device(device_name))
        trainer.run()
    finally:
        flag.uninstall()
        shutdown_distributed(ctx)
    return 0


class CohortTrainer:
    """Cross-validation and final training for one run (see the module docstring)."""

    def __init__(self, config, ctx, flag, device) -> None:
        self.config = config
        self.ctx = ctx
        self.flag = flag
        self.device = device
        self.out_dir = Path(config.execution.output_dir)
        self.recipe = load_recipe(config.train.preset, config.train.recipe)
        if config.train.backbone is not None and self.recipe.latent_standardization != "scalar":
            # the pretrained backbone learned the bundle's scalar-scaled latents
            LOGGER.info("a pretrained backbone is given: latents are scaled by one factor, not per channel")
            self.recipe.latent_standardization = "scalar"
        self.stages = selected_stages(config.train.stage)
        self.seed = int(config.seeds.master)
        self._eval_notes: list[str] = []

    # -- data ----------------------------------------------------------------------
    def _load(self):
        from demist_bids.training.splits import load_or_create_folds, read_folds
        from demist_bids.training.volumes import load_volume
        from demist_bids.training.distributed import barrier

        paths = prepare_cohort(self.config, self.ctx)
        if not paths:
            raise MissingInputError("no training scans")
        self.volumes = [load_volume(p) for p in paths]
        subjects = [_subject_of(v.name) for v in self.volumes]
        folds_path = self.out_dir / "folds.tsv"
        if self.ctx.is_main:
            load_or_create_folds(folds_path, subjects, self.config.train.folds, self.seed)
        barrier(self.ctx)
        self.folds = read_folds(folds_path)

    def _volumes_of(self, subjects) -> list:
        keep = set(subjects)
        return [v for v in self.volumes if _subject_of(v.name) in keep]

    # -- the whole run -----------------------------------------------------------------
    def run(self) -> None:
        self._load()
        if self.stages == {"distill"}:
            from demist_bids.training.distill import distill_exported_model

            distill_exported_model(self)
            return
        n_folds = self.config.train.folds
        evaluations = []
        if n_folds > 1:
            for fold in range(n_folds):
                evaluations.append(self.train_fold(fold))
            if "eval" in self.stages and self.ctx.is_main:
                self._write_evaluation(evaluations)
        if self.stages & set(STAGES):
            models = self.train_fold(-1)
            if self.ctx.is_main and models is not None:
                self._export(models["demist"])

    # -- one fold --------------------------------------------------------------------------
    def _fold_dir(self, fold: int) -> Path:
        return self.out_dir / "training" / ("all" if fold < 0 else f"fold-{fold}")

    def _run_args(self, directory: Path, stage: str, sampler):
        from demist_bids.training.stages import StageRun

        steps = capped(self.recipe.steps[stage], self.config.train.max_steps)
        return StageRun(
            sampler=sampler, recipe=self.recipe, directory=directory, steps=steps, ctx=self.ctx,
            flag=self.flag, resume=self.config.train.resume, seed=self.seed, device=self.device,
        )

    def _model_config(self, method: str, psr_scale: float, card: dict | None = None):
        from demist_bids.models.config import preset

        sampling = {"sampler": self.recipe.eval_sampler, "steps": self.recipe.eval_steps,
                    "start": self.recipe.eval_start, "precision": self.recipe.eval_precision}
        overrides = {}
        if self.config.train.backbone is not None:  # the BraTS bundle predicts epsilon
            if self.recipe.terminal_snr is not None:
                raise ValueError("terminal_snr cannot be used with a BraTS backbone: it was trained on the "
                                 "bundle's schedule")
            overrides["schedule"] = {"prediction_type": "epsilon"}
        elif self.recipe.terminal_snr is not None:
            overrides["schedule"] = {"prediction_type": "v_prediction", "terminal_snr": self.recipe.terminal_snr}
        config = preset(
            self.config.train.preset, ablation=METHOD_ABLATION[method],
            psr_scale=psr_scale, patch_size=list(self.recipe.patch_size), card=card or {},
            sampling=sampling, **overrides,
        )
        config.streams.condition_skip = self.recipe.condition_skip
        return config

    def train_fold(self, fold: int):
        """Stages for one fold (``-1``: every subject). Returns method -> model, or None."""
        import torch

        from demist_bids.models.demist import build_model
        from demist_bids.training import stages as st
        from demist_bids.training.engine import Stage, load_finished
        from demist_bids.training.patches import PatchSampler
        from demist_bids.training.volumes import cohort_psr_scale

        fold_dir = self._fold_dir(fold)
        train_subjects = self.folds.training(fold) if fold >= 0 else sorted(self.folds.fold_of_subject)
        train_volumes = self._volumes_of(train_subjects)
        psr_scale = cohort_psr_scale(train_volumes)
        sampler = PatchSampler(train_volumes, self.recipe.patch_size, psr_scale,
                               seed=self.seed + max(fold, 0) * 1000, rank=self.ctx.rank)
        LOGGER.info("%s: %d training scans, psr_scale %.4f", fold_dir.name, len(train_volumes), psr_scale)
        methods = METHODS if fold >= 0 else ("demist",)
        if fold >= 0 and "regressor" in self.stages:  # the baseline of the evaluation only
            self._train_regressor(fold_dir, sampler, psr_scale)
        if not self.stages & set(STAGES) - {"regressor"}:  # --stage eval: the fold's models exist already
            if "eval" not in self.stages:
                return None
            models = {m: self._diffusion_model(m, None, fold_dir, sampler) for m in methods}
            return self._evaluate_fold(fold, models) if fold >= 0 and self.ctx.is_main else models
        torch.manual_seed(self.seed + fold)
        foundation = build_model(self._model_config("ftldm", psr_scale)).to(self.device)

        def stage_or_load(name: str, train_fn, modules: dict) -> None:
            directory = fold_dir / name
            if name in self.stages:
                train_fn(foundation, self._run_args(directory, name, sampler))
                return
            stage = Stage(name, directory, 0, 1, modules=modules)
            load_finished(stage)
            if name == "align":
                st.apply_latent_statistics(foundation.config, stage.extra)

        autoencoders = {"psr_autoencoder": foundation.psr_autoencoder,
                        "cond_autoencoder": foundation.cond_autoencoder}
        later = self.stages - {"ae", "regressor"}
        if self.config.train.autoencoders_from is not None:
            self._reuse_autoencoders(foundation, fold_dir, sampler)
        else:
            if self.config.train.backbone_autoencoder is not None and "ae" in self.stages:
                from demist_bids.models.io import load_autoencoder_weights

                load_autoencoder_weights(foundation, Path(self.config.train.backbone_autoencoder))
            if "ae" in self.stages or later:
                stage_or_load("ae", st.train_autoencoders, autoencoders)
            if "align" in self.stages or later - {"align"}:
                stage_or_load("align", st.align_condition_encoder, autoencoders)
        if self.config.train.backbone is not None:
            from demist_bids.models.io import load_backbone_weights

            load_backbone_weights(foundation, Path(self.config.train.backbone))
        elif "backbone" in self.stages or later - {"align", "backbone"}:
            stage_or_load("backbone", st.train_backbone, {"backbone": foundation.backbone})
            foundation.freeze_backbone()
        if not self.stages & {"diffusion", "eval"}:
            return None
        models = {m: self._diffusion_model(m, foundation, fold_dir, sampler) for m in methods}
        if fold >= 0 and "eval" in self.stages and self.ctx.is_main:
            return self._evaluate_fold(fold, models)
        return models

    def _reuse_autoencoders(self, foundation, fold_dir: Path, sampler) -> None:
        """Both autoencoders from ``--autoencoders-from``; latent statistics measured on this cohort."""
        from demist_bids.models.io import load_model
        from demist_bids.training import stages as st

        source = load_model(Path(self.config.train.autoencoders_from))
        if source.config.autoencoder != foundation.config.autoencoder:
            raise UsageError(f"--autoencoders-from {self.config.train.autoencoders_from}: its autoencoders "
                             f"are not the {self.config.train.preset} preset's")
        foundation.psr_autoencoder.load_state_dict(source.psr_autoencoder.state_dict())
        foundation.cond_autoencoder.load_state_dict(source.cond_autoencoder.state_dict())
        statistics = st.measure_latent_statistics(foundation, self._run_args(fold_dir / "align", "align", sampler))
        st.apply_latent_statistics(foundation.config, statistics)
        if self.ctx.is_main:
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / "autoencoders_from.json").write_text(json.dumps(
                {"model": str(self.config.train.autoencoders_from), **statistics}, indent=1))
        LOGGER.info("%s: autoencoders from %s", fold_dir.name, self.config.train.autoencoders_from)

    def _diffusion_model(self, method: str, foundation, fold_dir: Path, sampler):
        """Build ``method``'s model on the fold's autoencoders and backbone; train or load its streams."""
        import torch

        from demist_bids.models.demist import build_model
        from demist_bids.models.io import load_model, save_model
        from demist_bids.models.unet import load_plain_state_dict, plain_state_dict
        from demist_bids.training.stages import apply_latent_statistics, train_streams

        model_dir = fold_dir / "models" / method
        if "diffusion" not in self.stages:
            if not (model_dir / "config.json").exists():
                raise MissingInputError(f"{model_dir} is missing: run the diffusion stage first")
            return load_model(model_dir, device=str(self.device))
        config = self._model_config(method, foundation.config.psr_scale)
        apply_latent_statistics(config, foundation.config)
        torch.manual_seed(self.seed + 100 * (fold_index(fold_dir) + 1) + METHODS.index(method))
        model = build_model(config).to(self.device)
        model.psr_autoencoder.load_state_dict(foundation.psr_autoencoder.state_dict())
        model.cond_autoencoder.load_state_dict(foundation.cond_autoencoder.state_dict())
        load_plain_state_dict(model.backbone, plain_state_dict(foundation.backbone))
        model.sync_controlnet_from_backbone()
        model.freeze_backbone()
        train_streams(model, self._run_args(fold_dir / f"diffusion-{method}", "diffusion", sampler),
                      name=f"diffusion-{method}")
        card = self._card(fold_dir.name, method)
        if self.recipe.anchor_batches > 0:
            from demist_bids.training.anchor import fit_anchor

            model.eval()
            batches = [{k: v.to(self.device) for k, v in b.items()}
                       for b in sampler.fixed_batches(self.recipe.anchor_batches, self.recipe.batch_size, stream=98)]
            model.config.anchor, card["anchor_fit"] = fit_anchor(model, batches, steps=self.recipe.anchor_steps,
                                                                      seed=self.seed)
            # the exported model is saved from this one: its card must carry the fit too
            model.config.card = {**model.config.card, "anchor_fit": card["anchor_fit"]}
        if self.ctx.is_main:
            save_model(model, model_dir, card=card)
        return model

    def _train_regressor(self, fold_dir: Path, sampler, psr_scale: float) -> None:
        """The U-Net baseline on the fold's patches, saved as ``models/unet-regressor``."""
        import torch

        from demist_bids.training.stages import fit_regressor

        torch.manual_seed(self.seed + 100 * (fold_index(fold_dir) + 1) + len(METHODS))
        fit_regressor(self._run_args(fold_dir / "regressor", "regressor", sampler), psr_scale,
                      fold_dir / "models" / "unet-regressor", save=self.ctx.is_main)

    # -- evaluation and export --------------------------------------------------------------
    def _eval_sampler(self):
        from demist_bids.training.methods import SamplerChoice

        r = self.recipe
        return SamplerChoice(r.eval_sampler, r.eval_steps, r.eval_start, r.eval_samples, r.eval_precision)

    def _evaluate_fold(self, fold: int, models: dict):
        """Every row of the table on the fold's held-out scans (:mod:`demist_bids.training.methods`)."""
        from demist_bids.training.heldout import evaluate_fold
        from demist_bids.evaluation.linear_baseline import fit_linear_psr
        from demist_bids.training.methods import demist_rows, diffusion_synthesizer

        train = self._volumes_of(self.folds.training(fold))
        held_out = self._volumes_of(self.folds.held_out(fold))
        linear = fit_linear_psr((v.cond[0], v.cond[1], v.psr, v.brain) for v in train)
        psr_scale = next(iter(models.values())).config.psr_scale
        device, choice = str(self.device), self._eval_sampler()
        rows = demist_rows(models["demist"], choice, seed=self.seed, device=device,
                           regressor_dir=self._fold_dir(fold) / "models" / "unet-regressor")
        self._eval_notes = rows.notes
        synthesizers = {m: diffusion_synthesizer(model, choice, seed=self.seed, device=device)
                        for m, model in models.items() if m != "demist"}
        return evaluate_fold(fold, held_out, {**rows.synthesizers, **synthesizers}, linear, psr_scale,
                             references=rows.references)

    def _write_evaluation(self, evaluations) -> None:
        import pandas as pd

        from demist_bids.training.heldout import pool_evaluations
        from demist_bids.reports.evaluation import write_evaluation

        rows, roc, medians = pool_evaluations(evaluations)
        if not rows:
            return
        notes = (f"Preset {self.config.train.preset}, {self.config.train.folds} folds, seed {self.seed}. "
                 + " ".join(self._eval_notes)
                 + " The U-Net regressor, the ablations and DEMIST were trained on the same patches of "
                 "each fold's training subjects.")
        paths = write_evaluation(pd.DataFrame(rows), roc, self.out_dir / "evaluation", notes=notes,
                                 lesion_medians=medians)
        LOGGER.info("Evaluation written to %s", paths["html"])

    def _card(self, scope: str, method: str) -> dict:
        summary = _dataset_summary(self.config.execution.bids_dir)
        card = {
            "method": method,
            "scope": scope,
            "training_data": {**summary, "scans": len(self.volumes),
                              "subjects": len(self.folds.fold_of_subject)},
            "folds": {"n_folds": self.folds.n_folds, "seed": self.folds.seed,
                      "assignment": {f"sub-{s}": f for s, f in self.folds.fold_of_subject.items()}},
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "max_steps": self.config.train.max_steps,
            "backbone": str(self.config.train.backbone) if self.config.train.backbone else "trained unconditionally on the cohort's PSR latents",
            "autoencoders": (f"from the demist model {self.config.train.autoencoders_from} (ae and align stages "
                             "not run; latent statistics measured on this cohort)"
                             if self.config.train.autoencoders_from else
                             f"fine-tuned from {self.config.train.backbone_autoencoder}"
                             if self.config.train.backbone_autoencoder else "trained on this cohort"),
        }
        if summary["synthetic"]:
            card["intended_use"] = ("Demonstration and testing only. Trained on synthetic (phantom) data; "
                                    "NOT a clinical model and not validated on real MRI.")
        else:
            card["intended_use"] = ("Research use on T1w+FLAIR acquired like the training cohort; "
                                    "not a medical device.")
        return card

    def _export(self, model) -> None:
        from demist_bids.models.io import save_model
        from demist_bids.training.model_card import comparison_tests, evaluation_summary, write_model_card

        card = self._card("all", "demist")
        card["cross_validation"] = evaluation_summary(self.out_dir / "evaluation")
        card["cross_validation_tests"] = comparison_tests(self.out_dir / "evaluation")
        target = self.out_dir / "model"
        save_model(model, target, card=card)
        write_model_card(target)
        LOGGER.info("Final model written to %s", target)
