"""Cross-validation results as TSV tables and one HTML page (the paper's Table 1).

Inputs are the per-scan measures of every method on its held-out fold; the
tables are:

- ``evaluation_scans.tsv``: one row per (method, fold, scan);
- ``evaluation.tsv``: one row per (method, fold), the mean over that fold's scans;
- ``evaluation_summary.tsv``: one row per method, mean and SD over folds;
- ``lesion_auc_pooled.tsv``: one row per method, the lesion-level AUCs over every
  held-out lesion together (a scan has few lesions; its own AUC is coarse);
- ``paired_tests.tsv``: DEMIST against every other method but the ceilings (and
  the paper's sampler against no diffusion and the linear baseline), per measure.

The HTML page shows the summary in Table 1's layout (mean +/- SD over folds):
every method, from the baselines a user could pick instead (linear, U-Net
regressor) through the parts of DEMIST (no diffusion, backbone only, the
single-stream ablations) to DEMIST with each sampler, and the ceilings (the
PSR autoencoder, the measured map); then the pooled lesion-level AUCs, the
paired tests and ROC curves of lesion vs normal-appearing white matter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from demist_bids.evaluation.statistics import HIGHER_IS_BETTER, comparisons, paired_tests
from demist_bids.reports.charts import roc_svg
from demist_bids.reports.render import render, svg
from demist_bids.utils.atomic import atomic_write_text

METHOD_LABELS = {
    "linear": "Linear (T1w+FLAIR)",
    "unet-regressor": "U-Net regressor (T1w+FLAIR, trained on the same patches; its step budget is stated with the table)",
    "no-diffusion": "No diffusion: PSR decoder on z_c",
    "backbone-only": "Backbone only (streams off, DEMIST's sampler, no blend towards z_c)",
    "ftldm": "FT-LDM",
    "controlnet": "FT-LDM+ControlNet",
    "lora": "FT-LDM+LoRA",
    "demist": "DEMIST (model's default sampler; its distilled student when it has one)",
    "demist-teacher": "DEMIST teacher (its own default sampler, when a distilled student makes the demist row)",
    "demist-paper": "DEMIST (paper's sampler: DDIM, 20 steps from pure noise, the denoiser's own estimates)",
    "ae-ceiling": "PSR autoencoder ceiling (measured PSR encoded and decoded)",
    "measured": "Measured PSR (qMT)",
}
"""Display names, in the row order of the table."""

CEILINGS = ("ae-ceiling", "measured")
"""Rows that see the measured map: upper bounds, never a baseline to beat."""

MEASURE_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mse": "MSE",
    "l1": "L1",
    "ncc": "NCC",
    "auc_proximal": "AUC proximal",
    "auc_distal": "AUC distal",
    "auc_combined": "AUC combined",
    "lesion_auc_proximal": "Lesion-level AUC proximal",
    "lesion_auc_distal": "Lesion-level AUC distal",
    "lesion_auc_combined": "Lesion-level AUC combined",
}
MEASURES = list(MEASURE_LABELS)


def _method_order(methods) -> list[str]:
    known = [m for m in METHOD_LABELS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def fold_table(per_scan: pd.DataFrame) -> pd.DataFrame:
    """Mean of every measure over the scans of each (method, fold)."""
    present = [m for m in MEASURES if m in per_scan]
    table = per_scan.groupby(["method", "fold"], sort=False)[present].mean().reset_index()
    table["n_scans"] = per_scan.groupby(["method", "fold"], sort=False).size().to_numpy()
    order = {m: i for i, m in enumerate(_method_order(table["method"]))}
    return table.sort_values(["method", "fold"], key=lambda c: c.map(order) if c.name == "method" else c)


def summary_table(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over folds (SD is ``nan`` with one fold)."""
    present = [m for m in MEASURES if m in folds]
    grouped = folds.groupby("method", sort=False)[present]
    mean = grouped.mean().add_suffix("_mean")
    sd = grouped.std(ddof=1).add_suffix("_sd")
    out = pd.concat([mean, sd], axis=1)
    out = out[[c for m in present for c in (f"{m}_mean", f"{m}_sd")]]
    out["n_folds"] = folds.groupby("method", sort=False).size()
    return out.loc[_method_order(out.index)].reset_index()


def _number(value: float, measure: str) -> str | None:
    """A measure's value with its digits (PSNR 2, MSE in scientific notation, others 4)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    digits = {"psnr": 2, "mse": 3}.get(measure, 4)
    return format(value, f".{digits}e" if measure == "mse" else f".{digits}f")


def _mean_sd(mean: float, sd: float | None, measure: str) -> dict:
    """A Table 1 cell: ``{"mean", "sd"}`` texts (None when absent); the template joins them
    with a plus-minus sign."""
    text = _number(mean, measure)
    return {"mean": text or "n/a", "sd": _number(sd, measure) if text else None}


def _roc_figure(roc_scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """ROC curves (NAWM positive, lesion negative) of every method, in the table's order."""
    curves = [(METHOD_LABELS.get(m, m), *roc_scores[m], m == "measured")
              for m in _method_order(roc_scores)]
    return roc_svg(curves, title="Lesion vs combined NAWM, pooled held-out scans")


HEADLINE_MEASURES = ("psnr", "ssim", "mse", "auc_combined", "lesion_auc_combined")
"""Measures whose paired tests the page shows (``paired_tests.tsv`` holds every measure)."""


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def _pooled(pooled: pd.DataFrame) -> dict | None:
    """The pooled lesion-level AUCs (one row per method), or None without lesions."""
    if pooled.empty:
        return None
    columns = [c for c in MEASURES if c.startswith("lesion_auc_") and c in pooled]
    return {"headers": ["Method", "Lesions"] + [MEASURE_LABELS[c] for c in columns],
            "rows": [[METHOD_LABELS.get(r["method"], r["method"]), str(int(r["n_lesions"]))]
                     + [_number(r[c], c) or "n/a" for c in columns] for _, r in pooled.iterrows()]}


def render_html(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    roc_scores: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    notes: str = "",
    pooled: pd.DataFrame | None = None,
) -> str:
    """The results page (``templates/evaluation.html``); ``notes`` is plain text describing
    the run (escaped here)."""
    present = [m for m in MEASURES if f"{m}_mean" in summary]
    table = {
        "headers": ["Method", "Folds"] + [MEASURE_LABELS[m] for m in present],
        "rows": [[METHOD_LABELS.get(rec["method"], rec["method"]), str(int(rec["n_folds"]))]
                 + [_mean_sd(rec[f"{m}_mean"], rec[f"{m}_sd"], m) for m in present]
                 for _, rec in summary.iterrows()],
    }
    if not tests.empty:
        tests = tests[tests["measure"].isin(HEADLINE_MEASURES)]
    test_rows = [
        [MEASURE_LABELS.get(r.measure, r.measure),
         f"{METHOD_LABELS.get(r.method, r.method)} vs {METHOD_LABELS.get(r.baseline, r.baseline)}",
         str(r.n_scans), f"{r.mean_difference:+.4g}", _p(r.wilcoxon_p), _p(r.ttest_p)]
        for r in tests.itertuples()
    ]
    return render(
        "evaluation.html", title=title, heading=title, subtitle="", notes=notes,
        nav=[("table1", "Table 1"), ("lesions", "Lesion-level AUC"), ("tests", "Paired tests"),
             ("roc", "ROC curves")],
        table=table, pooled=_pooled(pd.DataFrame() if pooled is None else pooled),
        tests=test_rows, roc=svg(_roc_figure(roc_scores)) if roc_scores else None,
    )


def write_evaluation(
    per_scan: pd.DataFrame,
    roc_scores: dict[str, tuple[np.ndarray, np.ndarray]],
    out_dir: Path,
    *,
    method: str = "demist",
    title: str = "DEMIST cross-validation",
    notes: str = "",
    lesion_medians: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, Path]:
    """Write the five TSVs and ``evaluation.html`` into ``out_dir``; return their paths.

    ``lesion_medians`` (method -> every held-out lesion's medians,
    :func:`~demist_bids.training.heldout.pool_evaluations`) gives the pooled lesion-level AUCs.
    """
    from demist_bids.evaluation.metrics import pooled_lesion_auc

    out_dir = Path(out_dir)
    first = ["method", "fold", "bids_name"]
    per_scan = per_scan[first + [c for c in per_scan.columns if c not in first]]
    folds = fold_table(per_scan)
    summary = summary_table(folds)
    synthesized = per_scan[~per_scan["method"].isin(CEILINGS)]
    pairs = comparisons(_method_order(synthesized["method"]), method)
    tests = pd.concat([paired_tests(synthesized, a, b) for a, b in pairs], ignore_index=True) if pairs else pd.DataFrame()
    pooled = pd.DataFrame(pooled_lesion_auc(lesion_medians or {}))
    if not pooled.empty:
        pooled = pooled.set_index("method").loc[_method_order(pooled["method"])].reset_index()
    paths = {
        "scans": out_dir / "evaluation_scans.tsv",
        "folds": out_dir / "evaluation.tsv",
        "summary": out_dir / "evaluation_summary.tsv",
        "pooled": out_dir / "lesion_auc_pooled.tsv",
        "tests": out_dir / "paired_tests.tsv",
        "html": out_dir / "evaluation.html",
    }
    atomic_write_text(paths["scans"], per_scan.to_csv(sep="\t", index=False, na_rep="n/a"))
    atomic_write_text(paths["folds"], folds.to_csv(sep="\t", index=False, na_rep="n/a"))
    atomic_write_text(paths["summary"], summary.to_csv(sep="\t", index=False, na_rep="n/a"))
    atomic_write_text(paths["pooled"], pooled.to_csv(sep="\t", index=False, na_rep="n/a"))
    atomic_write_text(paths["tests"], tests.to_csv(sep="\t", index=False, na_rep="n/a"))
    atomic_write_text(paths["html"], render_html(summary, tests, roc_scores, title=title, notes=notes,
                                                 pooled=pooled))
    return paths


__all__ = ["HIGHER_IS_BETTER", "fold_table", "summary_table", "render_html", "write_evaluation"]
