"""The self-contained group report ``group_PSR.html``, from the group level's data.

:func:`demist_bids.group.run.collect_group` measures the cohort and writes the
table; this module lays its results out with ``templates/group.html``: inline
SVG charts (:mod:`~demist_bids.reports.charts`), base64 PNG thumbnails, the
shared stylesheet and a few lines of inline JavaScript for sortable tables; no
external stylesheet, script, font or image. Links go only to the subjects' own
reports beside it.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from demist_bids.group.measures import THUMBNAIL_RANGE
from demist_bids.group.table import (KEY_MEASURES, MIN_RUNS_TO_FLAG, OUTLIER_Z, TOO_FEW_RUNS,
                                     measured_runs)
from demist_bids.reports import charts
from demist_bids.reports.render import fmt, render
from demist_bids.utils.atomic import atomic_write_text

HTML_NAME = "group_PSR.html"
TITLE = "demist group report: synthesized PSR"

STRIP_MEASURES = {
    "psr_median_brain": "brain",
    "psr_median_wm": "WM",
    "psr_median_gm": "GM",
    "psr_median_lesion": "lesion",
    "psr_median_nawm": "NAWM",
    "uncertainty_mean": "std",
    "qc_registration_cost": "reg. cost",
}
"""Values printed on each subject strip (column: short label)."""

AGREEMENT_COLUMNS = {
    "agree_psnr": "PSNR (dB)",
    "agree_ssim": "SSIM",
    "agree_mse": "MSE",
    "agree_l1": "L1",
    "agree_ncc": "NCC",
    "ba_wm_bias": "WM bias",
    "ba_wm_loa_low": "WM LoA low",
    "ba_wm_loa_high": "WM LoA high",
    "lesion_auc_combined": "AUC synth",
    "lesion_auc_combined_measured": "AUC measured",
    "lesion_auc_proximal": "AUC prox. synth",
    "lesion_auc_proximal_measured": "AUC prox. measured",
    "lesion_auc_distal": "AUC dist. synth",
    "lesion_auc_distal_measured": "AUC dist. measured",
}

SETTINGS_COLUMNS = {
    "model_name": "Model",
    "model_sha256": "Model SHA-256",
    "model_is_demo": "Demo model",
    "sampler_name": "Sampler",
    "sampler_steps": "Steps",
    "sampler_samples": "Samples",
    "sampler_seed": "Seed",
    "sampler_device": "Device",
    "software_version": "demist version",
    "qc_template": "Template",
}


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _link(text: str, href: str | None) -> dict:
    return {"text": text, "href": href}


def _summary(table, failures) -> list[dict]:
    with_map = (
        int(table["psr_median_brain"].notna().sum()) if "psr_median_brain" in table.columns else 0
    )
    screened = "outlier" in table.columns and table["outlier"].notna().any()
    flagged = int((table["outlier"] == True).sum()) if screened else "n/a"  # noqa: E712
    cards = [
        ("runs with a PSR map", with_map, False),
        ("failed", sum(f.status == "failed" for f in failures), True),
        ("missing", sum(f.status == "missing" for f in failures), True),
        ("outlier runs" if screened else f"outlier runs: {TOO_FEW_RUNS}", flagged, screened),
        ("subjects", int(table["subject"].nunique()), False),
    ]
    return [{"label": label, "count": count, "bad": bool(bad and count)}
            for label, count, bad in cards]


def _setting_text(value: Any) -> str:
    """Integers that pandas turned into floats (4.0 steps) printed as integers."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _settings(table) -> list[tuple[str, str]]:
    rows = []
    for column, label in SETTINGS_COLUMNS.items():
        if column not in table.columns:
            continue
        counts = table[column].dropna().map(_setting_text).value_counts()
        if not counts.empty:
            rows.append((label, "; ".join(f"{value} ({count})" for value, count in counts.items())))
    return rows


def _svgs(figures) -> list[Markup]:
    return [Markup(f) for f in figures if f]


def _distributions(table, style: charts.Styling) -> dict:
    return {
        "tissue": _svgs(charts.measure_strip(table, column, f"PSR median: {title}", "PSR", style)
                        for column, title in charts.TISSUE_MEASURES.items()
                        if column in table.columns),
        "qc": _svgs(charts.measure_strip(table, column, title, unit, style)
                    for column, (title, unit) in charts.QC_MEASURES.items()
                    if column in table.columns),
    }


def _outliers(outliers, links: dict[str, str]) -> list[list]:
    return [[_link(charts.run_label(o.bids_name), links.get(o.bids_name)), o.measure,
             fmt(o.value), fmt(o.cohort_median), f"{o.z:+.2f}"]
            for o in sorted(outliers, key=lambda o: -abs(o.z))]


def _failures(failures) -> list[list]:
    return [[f"sub-{f.subject}", f"ses-{f.session}" if f.session else "n/a", {"status": f.status},
             f.node or "n/a", {"code": f.reason},
             {"code": (f"sub-{f.subject}/log/{f.crash_file.parent.name}/{f.crash_file.name}"
                       if f.crash_file else "n/a")}]
            for f in failures]


def _agreement(table, style: charts.Styling) -> dict | None:
    measured = (
        table[table["agree_psnr"].notna()] if "agree_psnr" in table.columns else table.iloc[0:0]
    )
    if measured.empty:
        return None
    columns = [c for c in AGREEMENT_COLUMNS if c in table.columns]
    strips = [charts.measure_strip(measured, column, title, unit, style)
              for column, (title, unit) in charts.AGREEMENT_MEASURES.items()
              if column in measured.columns]
    return {
        "figures": _svgs(charts.agreement_figures(measured, style) + strips),
        "headers": ["Run"] + [AGREEMENT_COLUMNS[c] for c in columns],
        "rows": [[_link(charts.run_label(row["bids_name"]), style.links.get(row["bids_name"]))]
                 + [fmt(row.get(c)) for c in columns] for _, row in measured.iterrows()],
    }


def _strips(table, thumbnails: dict[str, np.ndarray], style: charts.Styling) -> list[dict]:
    vmin, vmax = THUMBNAIL_RANGE
    strips = []
    for _, row in table.iterrows():
        name = row["bids_name"]
        notes = row.get("outlier_measures") or ""
        notes = "" if notes == TOO_FEW_RUNS else notes
        hot = {n.split(" ")[0] for n in str(notes).split(";") if n}
        chips = [{"text": f"{label} {fmt(row.get(column))}", "hot": column in hot}
                 for column, label in STRIP_MEASURES.items()
                 if column in table.columns and not _is_missing(row.get(column))]
        if row.get("failure_reason") and not _is_missing(row.get("failure_reason")):
            chips.append({"text": str(row["failure_reason"]), "hot": True})
        thumb = thumbnails.get(name)
        strips.append({
            "name": name,
            "link": _link(charts.run_label(name), style.links.get(name)),
            "thumbnail": (charts.png_data_uri(thumb, vmin=vmin, vmax=vmax)
                          if thumb is not None else None),
            "status": str(row.get("status", "ok")),
            "group": None if style.split is None else style.group_of(row),
            "flagged": row.get("outlier") == True,  # noqa: E712 (n/a: not screened)
            "chips": chips,
        })
    return strips


def subtitle(dataset_name: str, n_runs: int) -> str:
    """The line under the title: dataset, runs, demist version, when."""
    from demist_bids import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Dataset: {dataset_name} · {n_runs} subject/session runs · demist {__version__} "
            f"· {stamp}")


def render_group_report(results) -> str:
    """The whole ``group_PSR.html`` page as a string, from a
    :class:`~demist_bids.group.run.GroupResults`."""
    table = results.table
    style = charts.styling_for(table, results.split, results.links)
    agreement = _agreement(table, style)
    nav = [(anchor, label) for anchor, label in [
        ("summary", "Summary"), ("distributions", "Distributions"), ("outliers", "Outliers"),
        ("failures", "Failures"), ("agreement", "Agreement"), ("settings", "Settings"),
        ("subjects", "Subjects")] if anchor != "agreement" or agreement]
    return render(
        "group.html", title=TITLE, heading=TITLE, nav=nav,
        subtitle=subtitle(results.dataset_name, len(table)),
        cards=_summary(table, results.failures),
        demo=("model_is_demo" in table.columns
              and table["model_is_demo"].fillna(False).astype(bool).any()),
        legend=(None if style.split is None
                else {"split": style.split, "colors": list(style.colors.items())}),
        distributions=_distributions(table, style),
        outliers=_outliers(results.outliers, results.links),
        n_measured=measured_runs(table), min_runs=MIN_RUNS_TO_FLAG, outlier_z=OUTLIER_Z,
        screened=", ".join(m for m in KEY_MEASURES if m in table.columns),
        failures=_failures(results.failures), agreement=agreement, settings=_settings(table),
        thumbnail_range=THUMBNAIL_RANGE, colorbar=charts.colorbar_uri(),
        strips=_strips(table, results.thumbnails, style),
    )


def write_group_report(output_dir: Path, results) -> Path:
    """Write the page as ``output_dir/group_PSR.html``, atomically."""
    return atomic_write_text(Path(output_dir) / HTML_NAME, render_group_report(results))
