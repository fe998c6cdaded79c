"""The model card: a README.md beside the weights, written from ``config.json``'s ``card``.

The card is data first (``config.card`` travels with the weights and is what
programs read); the Markdown rendering is for people deciding whether the
model fits their data: what it was trained on, how it was validated, the
cross-validated numbers, and what it must not be used for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from demist_bids.utils.atomic import atomic_write_text


def evaluation_summary(evaluation_dir: Path) -> list[dict]:
    """Rows of ``evaluation_summary.tsv`` (mean/SD over folds per method); [] when absent.

    The pooled lesion-level AUCs (``lesion_auc_pooled.tsv``) join each method's
    row as ``pooled_lesion_auc_*`` and ``n_lesions``.
    """
    rows = _read_tsv(Path(evaluation_dir) / "evaluation_summary.tsv")
    pooled = {r["method"]: r for r in _read_tsv(Path(evaluation_dir) / "lesion_auc_pooled.tsv")}
    for row in rows:
        extra = pooled.get(row.get("method"), {})
        row.update({("pooled_" + k if k.startswith("lesion_auc_") else k): v
                    for k, v in extra.items() if k != "method"})
    return rows


def comparison_tests(evaluation_dir: Path) -> list[dict]:
    """The rows of ``paired_tests.tsv`` the card cites (its compared pairs, PSNR and lesion AUC)."""
    pairs = {(method, baseline) for method, baseline, _ in _COMPARED}
    return [r for r in _read_tsv(Path(evaluation_dir) / "paired_tests.tsv")
            if (r.get("method"), r.get("baseline")) in pairs and r.get("measure") in ("psnr", "auc_combined")]


_TEXT_COLUMNS = ("method", "measure", "baseline")


def _read_tsv(path: Path) -> list[dict]:
    """Rows of an evaluation TSV, numbers as floats (None where not a number); [] when absent."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for row in rows:
        clean = {}
        for key, value in row.items():
            try:
                clean[key] = value if key in _TEXT_COLUMNS else float(value)
            except ValueError:
                clean[key] = None
            if clean[key] != clean[key]:  # NaN: not valid JSON in config.json
                clean[key] = None
        out.append(clean)
    return out


_CARD_MEASURES = [
    ("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("mse", "MSE", "{:.3e}"),
    ("auc_proximal", "Voxel AUC proximal", "{:.3f}"), ("auc_distal", "Voxel AUC distal", "{:.3f}"),
    ("auc_combined", "Voxel AUC combined", "{:.3f}"),
    ("lesion_auc_proximal", "Lesion-level AUC proximal", "{:.3f}"),
    ("lesion_auc_distal", "Lesion-level AUC distal", "{:.3f}"),
    ("lesion_auc_combined", "Lesion-level AUC combined", "{:.3f}"),
]
"""Columns of the card's table (those no row has, other than the first four, are left out)."""
_ALWAYS = ("psnr", "ssim", "mse", "auc_combined")


def _cell(value, sd, spec: str) -> str:
    if value is None or value != value:
        return "n/a"
    return spec.format(value) + ("" if sd is None or sd != sd else " ± " + spec.format(sd))


def _metric_table(rows: list[dict]) -> str:
    """Every method's row, every measure it has: the whole evaluation table (issue 16)."""
    measures = [m for m in _CARD_MEASURES if m[0] in _ALWAYS or any(f"{m[0]}_mean" in r for r in rows)]
    lines = ["| Method | " + " | ".join(m[1] for m in measures) + " |",
             "|---" * (len(measures) + 1) + "|"]
    for row in rows:
        cells = [_cell(row.get(f"{key}_mean"), row.get(f"{key}_sd"), spec) for key, _, spec in measures]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    lines += ["", "Voxel AUC: PSR separating NAWM voxels from lesion voxels; lesion-level AUC: each lesion's "
              "median PSR against the medians of its own proximal and contralateral NAWM (the paper's).",
              "", _method_legend(rows)]
    pooled = [r for r in rows if r.get("n_lesions")]
    if pooled:
        names = ("proximal", "distal", "combined")
        lines += ["", "Lesion-level AUC over every held-out lesion together:", "",
                  "| Method | Lesions | " + " | ".join(f"Lesion-level AUC {n}" for n in names) + " |",
                  "|---" * (len(names) + 2) + "|"]
        lines += [f"| {r['method']} | {int(r['n_lesions'])} | "
                  + " | ".join(_cell(r.get(f"pooled_lesion_auc_{n}"), None, "{:.3f}") for n in names) + " |"
                  for r in pooled]
    return "\n".join(lines)


def _method_legend(rows: list[dict]) -> str:
    """What each row is, in one line (the evaluation page's labels)."""
    from demist_bids.reports.evaluation import METHOD_LABELS

    return "Rows: " + "; ".join(f"`{r['method']}` {METHOD_LABELS.get(r['method'], r['method'])}" for r in rows) + "."


def _distillation_section(distillation: dict | None) -> list[str]:
    """A distilled student's provenance: its teacher (by checksum) and how it was distilled."""
    if not distillation:
        return []
    return [
        f"- Distilled student: {distillation.get('method')}; teacher sha256 "
        f"`{str(distillation.get('teacher_sha256', '?'))[:16]}...` sampled with {distillation.get('teacher_sampler')}, "
        f"guidance {distillation.get('teacher_guidance', 1.0):g}"
        + (", blended towards z_c" if distillation.get("blend_towards_z_c") else "")
        + f"; rounds {distillation.get('rounds')}, {distillation.get('iterations')} Adam steps per round at batch "
        f"{distillation.get('batch_size')}, learning rate {distillation.get('learning_rate')}",
    ]


def render_model_card(config: dict) -> str:
    """Markdown model card from a model ``config.json`` dictionary."""
    card = config.get("card", {})
    data = card.get("training_data", {})
    folds = card.get("folds", {})
    lines = [f"# DEMIST model card ({config.get('preset', '?')} preset)", ""]
    if data.get("synthetic"):
        lines += ["> **Trained on synthetic data (a `demist-phantom` cohort). This is not a clinical "
                  "model**: it demonstrates and tests the software and must not be used to measure "
                  "myelin in real scans.", ""]
    lines += [
        "## Intended use", "", card.get("intended_use", "not recorded"), "",
        "## Training data", "",
        f"- Dataset: {data.get('name', 'not recorded')} (generated by: "
        f"{', '.join(data.get('generated_by', [])) or 'n/a'})",
        f"- Scans: {data.get('scans', '?')}, subjects: {data.get('subjects', '?')}",
        f"- PSR scale (cohort-wide constant mapped to 1.0): {config.get('psr_scale')}",
        f"- Inputs expected: {config.get('preprocessing', '')}", "",
        "## Training", "",
        f"- Seed: {card.get('seed')}; backbone: {card.get('backbone')}",
        f"- Recipe: `{json.dumps(card.get('recipe', {}), sort_keys=True)}`",
        f"- Streams: semantic={config['streams']['semantic']}, spatial={config['streams']['spatial']}, "
        f"adaptive={config['streams']['adaptive']}",
        f"- Recommended sampler: {_sampler_line(config)}",
        *_diagnostics_section(card.get("stream_diagnostics")),
        *_distillation_section(card.get("distillation")),
        "",
        "## Cross-validation", "",
        f"{folds.get('n_folds', '?')} subject-grouped folds (seed {folds.get('seed')}); held-out "
        "measures inside the brain on PSR / psr_scale, mean ± SD over folds:", "",
    ]
    rows = card.get("cross_validation") or []
    lines.append(_metric_table(rows) if rows else "No cross-validation was run (one fold).")
    if rows:
        lines += [""] + _against_linear(rows, card.get("cross_validation_tests") or [])
    lines += ["", f"demist version {config.get('demist_version', '?')}", ""]
    external = card.get("external_validation") or []
    for entry in [external] if isinstance(external, dict) else external:
        lines += ["## External validation", "",
                  f"On {entry['cohort']}, never seen in training; the linear baseline was fitted on "
                  "the training cohort. Mean ± SD over scans is not shown: one fold.", "",
                  _metric_table(entry["rows"]), ""]
        lines += _against_linear(entry["rows"], entry.get("paired_tests", []))
    return "\n".join(lines)


def _diagnostics_section(diagnostics: dict | None) -> list[str]:
    """Where the quality comes from: ``benchmarks/stream_diagnostics.py``'s summary, when recorded."""
    if not diagnostics:
        return []
    return [
        "", "## Where the quality comes from", "",
        f"`{diagnostics['command']}` ({diagnostics['cohort']}; PSNR inside the brain):", "",
        "| sampling | PSNR (dB) |", "|---|---|",
        *[f"| {label} | {value:.2f} |" for label, value in diagnostics["psnr_db"].items()], "",
        f"Noise MSE with a mismatched condition over the true one, mean over t >= 500: "
        f"{diagnostics['cond_ratio_t500']:.2f}; Gaussian denoiser over the backbone, mean over t: "
        f"{diagnostics['prior_ratio']:.2f}. {diagnostics.get('reading', '')}", "",
    ]


_COMPARED = (("demist", "linear", "DEMIST minus the linear baseline"),
             ("demist", "unet-regressor", "DEMIST minus the U-Net regressor"),
             ("demist", "no-diffusion", "DEMIST minus no diffusion (the PSR decoder on z_c)"),
             ("demist", "backbone-only", "DEMIST minus its backbone alone (streams off)"),
             ("demist-paper", "no-diffusion", "DEMIST with the paper's sampler minus no diffusion"),
             ("demist", "demist-teacher", "DEMIST (distilled student) minus its teacher's default sampler"))
"""The differences the card spells out: against what a user would use instead, and where the quality comes from."""


def _against_linear(rows: list[dict], paired: list[dict] = ()) -> list[str]:
    """Plain sentences: DEMIST minus each baseline on PSNR and lesion AUC (see ``_COMPARED``).

    With the evaluation's paired tests, each difference carries its scan-paired
    Wilcoxon p-value, so "better" can be read as a claim with its evidence.
    """
    by_method = {row.get("method"): row for row in rows}
    lines = []
    for method, baseline, label in _COMPARED:
        first, second = by_method.get(method), by_method.get(baseline)
        if not first or not second:
            continue
        tests = {row.get("measure"): row for row in paired
                 if row.get("method") == method and row.get("baseline") == baseline}
        parts = []
        for key, name, unit in (("psnr", "PSNR", " dB"), ("auc_combined", "lesion AUC", "")):
            try:
                diff = float(first[f"{key}_mean"]) - float(second[f"{key}_mean"])
            except (KeyError, TypeError, ValueError):
                continue
            if diff == diff:  # not NaN
                text = f"{name} {diff:+.3f}{unit} ({'better' if diff > 0 else 'worse'}"
                test = tests.get(key)
                if test and test.get("wilcoxon_p") is not None:
                    text += f"; paired Wilcoxon p = {float(test['wilcoxon_p']):.3g} over {int(test['n_scans'])} scans"
                parts.append(text + ")")
        if parts:
            lines += [f"{label}: {', '.join(parts)}.", ""]
    return lines


def _sampler_line(config: dict) -> str:
    sampling = config["sampling"]
    text = f"{sampling['sampler']} with {sampling['steps']} steps"
    if sampling.get("precision", "auto") == "bf16":
        text += " under bf16 autocast (on CUDA and on CPUs with native bf16; fp32 elsewhere)"
    if float(sampling.get("start", 1.0)) < 1:
        text += (f", starting from the aligned conditioning latent noised to {sampling['start']:g} of "
                 "the schedule (1.0 would be pure noise, the paper)")
    guidance = float(sampling.get("guidance", 1.0))
    if guidance != 1:
        branch = ("the backbone with its adapters and no condition" if sampling.get("unconditional") == "adapted"
                  else "the frozen backbone")
        text += f", classifier-free guidance {guidance:g} ({branch} as the unconditional branch)"
    if (config.get("streams") or {}).get("condition_skip"):
        text += ("; the denoiser (not the paper's) blends its clean-latent estimate towards the conditioning "
                 "latent z_c by weights learned with the streams (StreamsConfig.condition_skip)")
    terminal = (config.get("schedule") or {}).get("terminal_snr")
    if terminal is not None:
        text += (f"; its noise schedule (not the paper's) rescaled to a terminal SNR of {float(terminal):.1g} "
                 "(Lin et al. 2024; ScheduleConfig.terminal_snr)")
    anchor = config.get("anchor") or {}
    if anchor.get("weights"):
        weights = anchor["weights"]
        text += (f"; every clean-latent estimate blended towards the conditioning latent z_c, per channel, "
                 f"by weights fitted on {anchor.get('patches', 0)} training patches at guidance "
                 f"{float(anchor.get('guidance', 1.0)):g} (mean weight {sum(weights[-1]) / len(weights[-1]):.2f} at "
                 f"t = {anchor['timesteps'][-1]}, {sum(weights[0]) / len(weights[0]):.2f} at t = "
                 f"{anchor['timesteps'][0]}; 0 is the network's own estimate, 1 is z_c)")
    overlap = float(sampling.get("autoencoder_overlap", 0.5))
    if overlap != 0.5:
        text += f"; autoencoder windows overlap by {overlap:g}"
    encoders = sampling.get("autoencoder_blend", "gaussian")
    decoder = sampling.get("decoder_blend") or encoders
    if encoders == decoder != "gaussian":
        text += f"; autoencoder windows blended with {encoders} weights"
    elif encoders != decoder:
        text += f"; autoencoder windows blended with {encoders} weights when encoding, {decoder} when decoding"
    bench = config.get("card", {}).get("sampler_benchmark")
    if bench:
        paper = bench.get("reference_is_paper", bench["reference"] == "ddpm:1000")
        kind = ("the paper's DDPM-1000 from pure noise" if paper else
                f"{bench['reference']} (DDPM over the same timesteps from the same start, not the paper's "
                "DDPM-1000 from pure noise)")
        text += (f"; benchmarked against {kind}: {bench['speedup']}x faster, PSNR drop {bench['psnr_drop_db']} dB "
                 f"against the true PSR (the reference itself scored {bench.get('reference_psnr_truth_db', 'n/a')} dB)")
    return text


def write_model_card(model_dir: Path) -> Path:
    """Write ``README.md`` into a model directory from its ``config.json``.

    Note that the README is part of the directory's sha256 (it is a file in it).
    """
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    return atomic_write_text(model_dir / "README.md", render_model_card(config))


def append_external_validation(model_dir: Path, summary_tsv: Path, cohort: str) -> Path:
    """Add an external validation (:mod:`demist_bids.training.external`) to the card.

    It goes into ``config.json`` (so a re-rendered README keeps it) and the README;
    validations on several cohorts are kept in the order they were added, and a
    second one on the same cohort replaces the first.
    """
    from demist_bids.models.io import read_model_config, write_model_config

    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    previous = config.card.get("external_validation") or []
    previous = [previous] if isinstance(previous, dict) else list(previous)
    entry = {
        "cohort": cohort, "rows": evaluation_summary(Path(summary_tsv).parent),
        "paired_tests": comparison_tests(Path(summary_tsv).parent),
    }
    config.card = {**config.card,
                   "external_validation": [e for e in previous if e.get("cohort") != cohort] + [entry]}
    write_model_config(model_dir, config)
    return write_model_card(model_dir)
