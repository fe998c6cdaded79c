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

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from demist_bids.evaluation.statistics import HIGHER_IS_BETTER, comparisons, paired_tests
from demist_bids.utils.atomic import atomic_write_text

METHOD_LABELS = {
    "linear": "Linear (T1w+FLAIR)",
    "unet-regressor": "U-Net regressor (T1w+FLAIR, trained on the same patches; its step budget is stated with the table)",
    "no-diffusion": "No diffusion: PSR decoder on z_c",
    "backbone-only": "Backbone only (streams off, DEMIST's sampler)",
    "ftldm": "FT-LDM",
    "controlnet": "FT-LDM+ControlNet",
    "lora": "FT-LDM+LoRA",
    "demist": "DEMIST (model's default sampler)",
    "demist-paper": "DEMIST (paper's sampler: DDIM, 20 steps from pure noise)",
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


def _fmt(mean: float, sd: float, measure: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    digits = {"psnr": 2, "mse": 3}.get(measure, 4)
    spec = f".{digits}e" if measure == "mse" else f".{digits}f"
    text = format(mean, spec)
    if sd is not None and not math.isnan(sd):
        text += " &plusmn; " + format(sd, spec)
    return text


def _roc_figure(roc_scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """ROC curves (NAWM positive, lesion negative) as an inline SVG string."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for method in _method_order(roc_scores):
        nawm, lesion = roc_scores[method]
        if nawm.size == 0 or lesion.size == 0:
            continue
        labels = np.r_[np.ones(nawm.size), np.zeros(lesion.size)]
        scores = np.r_[nawm, lesion]
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = roc_auc_score(labels, scores)
        style = "--" if method == "measured" else "-"
        ax.plot(fpr, tpr, style, label=f"{METHOD_LABELS.get(method, method)} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="False positive rate (lesion voxels)", ylabel="True positive rate (NAWM voxels)")
    ax.set_title("Lesion vs combined NAWM, pooled held-out scans", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _html_table(frame: pd.DataFrame, columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in frame
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HEADLINE_MEASURES = ("psnr", "ssim", "mse", "auc_combined", "lesion_auc_combined")
"""Measures whose paired tests the page shows (``paired_tests.tsv`` holds every measure)."""


def pooled_table(pooled: pd.DataFrame) -> str:
    """HTML table of the pooled lesion-level AUCs (one row per method)."""
    if pooled.empty:
        return "<p>No lesions in the held-out scans: no lesion-level AUCs.</p>"
    columns = [c for c in MEASURES if c.startswith("lesion_auc_") and c in pooled]
    rows = [[html.escape(METHOD_LABELS.get(r["method"], r["method"])), str(int(r["n_lesions"]))]
            + [_fmt(r[c], None, c) for c in columns] for _, r in pooled.iterrows()]
    return _html_table(rows, ["Method", "Lesions"] + [MEASURE_LABELS[c] for c in columns])


def render_html(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    roc_scores: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    notes: str = "",
    pooled: pd.DataFrame | None = None,
) -> str:
    """The results page; ``notes`` is trusted HTML describing the run."""
    present = [m for m in MEASURES if f"{m}_mean" in summary]
    rows = []
    for _, rec in summary.iterrows():
        cells = [html.escape(METHOD_LABELS.get(rec["method"], rec["method"])), str(int(rec["n_folds"]))]
        cells += [_fmt(rec[f"{m}_mean"], rec[f"{m}_sd"], m) for m in present]
        rows.append(cells)
    table = _html_table(rows, ["Method", "Folds"] + [MEASURE_LABELS[m] for m in present])
    if not tests.empty:
        tests = tests[tests["measure"].isin(HEADLINE_MEASURES)]
    test_rows = [
        [
            MEASURE_LABELS.get(r.measure, r.measure),
            html.escape(f"{METHOD_LABELS.get(r.method, r.method)} vs {METHOD_LABELS.get(r.baseline, r.baseline)}"),
            str(r.n_scans),
            f"{r.mean_difference:+.4g}",
            "n/a" if math.isnan(r.wilcoxon_p) else f"{r.wilcoxon_p:.3g}",
            "n/a" if math.isnan(r.ttest_p) else f"{r.ttest_p:.3g}",
        ]
        for r in tests.itertuples()
    ]
    tests_html = (
        _html_table(test_rows, ["Measure", "Comparison", "Scans", "Mean difference", "Wilcoxon p", "Paired t p"])
        if test_rows
        else "<p>No baseline to compare against.</p>"
    )
    roc = _roc_figure(roc_scores) if roc_scores else "<p>No lesion masks: no ROC curves.</p>"
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{notes}"
        "<h2>Table 1: held-out folds (mean &plusmn; SD over folds)</h2>"
        "<p>Image measures inside the brain mask on the PSR scale divided by the model's "
        "cohort-wide PSR scale (as in the paper's normalized [0,1] images); AUC: PSR separating "
        "normal-appearing white matter from T2 lesions, voxel by voxel; lesion-level AUC: each "
        "lesion's median PSR against the medians of its own proximal and contralateral (distal) "
        "NAWM, the paper's lesion-wise ROC (per scan, then averaged; n/a where no held-out scan has "
        "a lesion). The two ceiling rows see the measured map: the PSR autoencoder's reconstruction "
        "bounds anything that works in its latent space, and the measured row is the qMT map itself, "
        "the ceiling for the AUCs.</p>"
        f"{table}<h2>Lesion-level AUC over every held-out lesion</h2>"
        f"{pooled_table(pd.DataFrame() if pooled is None else pooled)}"
        "<h2>Paired tests</h2><p>Scan-paired, on the held-out scans; the page shows the headline "
        "measures, paired_tests.tsv every measure.</p>"
        f"{tests_html}<h2>ROC curves</h2>{roc}</body></html>"
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
