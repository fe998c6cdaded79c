"""The self-contained group report ``group_PSR.html``.

One file that opens offline: inline CSS, inline SVG charts, base64 PNG
thumbnails and a few lines of inline JavaScript for sortable tables; no
external stylesheet, script, font or image. Links go only to the subjects'
own reports beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from demist_bids.group import figures
from demist_bids.group.collect import Failure
from demist_bids.group.measures import THUMBNAIL_RANGE
from demist_bids.group.table import (
    KEY_MEASURES,
    MIN_RUNS_TO_FLAG,
    OUTLIER_Z,
    TOO_FEW_RUNS,
    Outlier,
    measured_runs,
)

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

CSS = """
:root { --ink:#1d2430; --muted:#5b6573; --line:#d8dde4; --bg:#f6f7f9; --flag:#d62728; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#1d2b3a; color:#fff; padding:18px 32px; }
header h1 { margin:0 0 4px; font-size:22px; }
header p { margin:0; color:#c9d3de; }
main { max-width:1240px; margin:0 auto; padding:8px 32px 40px; }
nav { margin:10px 0 0; }
nav a { color:#bcd6f5; margin-right:16px; text-decoration:none; }
section { background:#fff; border:1px solid var(--line); border-radius:6px; padding:14px 20px; margin:18px 0; }
h2 { font-size:18px; margin:4px 0 10px; }
p.note { color:var(--muted); margin:4px 0 10px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:120px; background:#fafbfc; }
.card b { display:block; font-size:22px; }
.card.bad b { color:var(--flag); }
.banner { background:#fff4d6; border:1px solid #e8c766; border-radius:6px; padding:8px 14px; margin:14px 0 0; }
.figures { display:flex; flex-wrap:wrap; gap:10px; }
svg.chart { background:#fff; font-size:11px; }
svg .title { font-size:12.5px; font-weight:600; fill:var(--ink); }
svg .label { font-size:11.5px; fill:var(--muted); }
svg .tick { font-size:10.5px; fill:var(--muted); }
svg .note { font-size:10px; fill:var(--muted); }
svg .frame { fill:none; stroke:#b9c0c9; }
svg .grid { stroke:#eceff3; }
svg .box { fill:#e9eef5; stroke:#9fb0c4; }
svg .median { stroke:#34495e; stroke-width:2; }
svg .ref { stroke:#7f8c8d; stroke-dasharray:4 3; }
svg .interval { stroke:#5b6573; stroke-width:2; }
svg .dot { stroke:#fff; stroke-width:0.8; fill-opacity:0.9; }
svg .flag { fill:none; stroke:var(--flag); stroke-width:2; }
svg a:hover .dot { stroke:#000; stroke-width:1.5; }
.legend span { display:inline-block; margin-right:14px; }
.legend i { display:inline-block; width:11px; height:11px; border-radius:50%; margin-right:5px; vertical-align:-1px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { background:#f0f3f6; cursor:pointer; user-select:none; white-space:nowrap; }
th[aria-sort="ascending"]::after { content:" \\25B2"; }
th[aria-sort="descending"]::after { content:" \\25BC"; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
td:first-child { white-space:nowrap; }
.scroll { overflow-x:auto; }
.strips { display:flex; flex-direction:column; gap:6px; }
.strip { display:flex; align-items:center; gap:14px; border:1px solid var(--line); border-radius:6px; padding:6px 10px; }
.strip.flagged { border-color:var(--flag); box-shadow: inset 4px 0 0 var(--flag); }
.strip.failed, .strip.missing { background:#fbf1f1; }
.strip img { flex:none; height:84px; width:84px; object-fit:contain; image-rendering:pixelated; background:#111; border-radius:3px; }
.strip .thumb-empty { flex:none; width:84px; height:84px; background:#ddd; border-radius:3px; display:flex; align-items:center; justify-content:center; color:#777; font-size:11px; }
.strip .name { flex:none; width:220px; overflow-wrap:anywhere; }
.strip .name a { font-weight:600; color:var(--accent); }
.chips { display:flex; flex-wrap:wrap; gap:6px; }
.chip { border:1px solid var(--line); border-radius:12px; padding:1px 9px; font-size:12.5px; background:#fafbfc; }
.chip.hot { border-color:var(--flag); color:var(--flag); font-weight:600; }
.status { font-size:11.5px; border-radius:10px; padding:1px 8px; background:#e3f1e6; color:#256d36; }
.status.failed, .status.missing { background:#f8dddd; color:#9c1c1c; }
.colorbar { display:inline-flex; align-items:center; gap:6px; color:var(--muted); font-size:12px; }
.colorbar img { height:10px; width:140px; }
footer { color:var(--muted); font-size:12px; margin-top:20px; }
"""

SORT_SCRIPT = """
(function () {
  function key(row, index) {
    var cell = row.cells[index];
    var text = cell ? (cell.getAttribute("data-value") || cell.textContent) : "";
    var number = parseFloat(text);
    return isNaN(number) ? { n: null, s: text.toLowerCase() } : { n: number, s: text };
  }
  function compare(a, b) {
    if (a.n !== null && b.n !== null) { return a.n - b.n; }
    if (a.n !== null) { return -1; }
    if (b.n !== null) { return 1; }
    return a.s.localeCompare(b.s);
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var headers = table.querySelectorAll("thead th");
    Array.prototype.forEach.call(headers, function (header, index) {
      header.addEventListener("click", function () {
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var order = compare(key(a, index), key(b, index));
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _link(text: str, href: str | None) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text)


def _table(headers: Sequence[str], rows: list[list[str]], *, numeric: Sequence[bool] = ()) -> str:
    """A sortable table; ``rows`` hold ready HTML for each cell."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            is_num = index < len(numeric) and numeric[index]
            cells.append(f'<td class="num">{cell}</td>' if is_num else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{note_html}{body}</section>'


def _summary(table, failures: list[Failure]) -> str:
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
    html = "".join(
        f'<div class="card{" bad" if bad and count else ""}"><b>{count}</b>{escape(label)}</div>'
        for label, count, bad in cards
    )
    return f'<div class="cards">{html}</div>'


def _setting_text(value: Any) -> str:
    """Integers that pandas turned into floats (4.0 steps) printed as integers."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _settings(table) -> str:
    rows = []
    for column, label in SETTINGS_COLUMNS.items():
        if column not in table.columns:
            continue
        counts = table[column].dropna().map(_setting_text).value_counts()
        if counts.empty:
            continue
        text = "; ".join(f"{escape(value)} ({count})" for value, count in counts.items())
        rows.append([escape(label), text])
    if not rows:
        return "<p class='note'>No sidecar metadata found.</p>"
    return _table(["Setting", "Values (runs)"], rows)


def _legend(style: figures.Styling) -> str:
    if style.split is None:
        return ""
    items = "".join(
        f'<span><i style="background:{color}"></i>{escape(name)}</span>'
        for name, color in style.colors.items()
    )
    return f'<p class="legend">Colour by <b>{escape(style.split)}</b>: {items} &middot; red ring: outlier</p>'


def _distributions(table, style: figures.Styling) -> str:
    charts = [
        figures.measure_strip(table, column, f"PSR median: {title}", "PSR", style)
        for column, title in figures.TISSUE_MEASURES.items()
        if column in table.columns
    ]
    qc = [
        figures.measure_strip(table, column, title, unit, style)
        for column, (title, unit) in figures.QC_MEASURES.items()
        if column in table.columns
    ]
    tissue_html = "".join(c for c in charts if c)
    qc_html = "".join(c for c in qc if c)
    return (
        _legend(style)
        + f'<div class="figures">{tissue_html}</div>'
        + (
            "<h3>Quality and uncertainty</h3>" + f'<div class="figures">{qc_html}</div>'
            if qc_html
            else ""
        )
    )


def _outlier_table(outliers: list[Outlier], links: dict[str, str], n_measured: int) -> str:
    if n_measured < MIN_RUNS_TO_FLAG:
        return (f"<p><b>Too few runs to flag</b>: {n_measured} measured run(s); outliers are "
                f"screened from {MIN_RUNS_TO_FLAG} runs, below which the cohort median and MAD "
                "are too noisy to judge any run by.</p>")
    if not outliers:
        return "<p>No run is an outlier.</p>"
    rows = [
        [
            _link(figures.run_label(o.bids_name), links.get(o.bids_name)),
            escape(o.measure),
            _fmt(o.value),
            _fmt(o.cohort_median),
            f"{o.z:+.2f}",
        ]
        for o in sorted(outliers, key=lambda o: -abs(o.z))
    ]
    return _table(
        ["Run", "Measure", "Value", "Cohort median", "Robust z"],
        rows,
        numeric=[False, False, True, True, True],
    )


def _failure_table(failures: list[Failure]) -> str:
    if not failures:
        return "<p>Every input subject/session has results.</p>"
    rows = []
    for f in failures:
        crash = (
            f"sub-{f.subject}/log/{f.crash_file.parent.name}/{f.crash_file.name}"
            if f.crash_file
            else "n/a"
        )
        rows.append(
            [
                escape(f"sub-{f.subject}"),
                escape(f"ses-{f.session}" if f.session else "n/a"),
                f'<span class="status {f.status}">{f.status}</span>',
                escape(f.node or "n/a"),
                f"<code>{escape(f.reason)}</code>",
                f"<code>{escape(crash)}</code>",
            ]
        )
    return _table(["Subject", "Session", "Status", "Node", "Reason", "Crash file"], rows)


def _agreement(table, style: figures.Styling) -> str:
    columns = [c for c in AGREEMENT_COLUMNS if c in table.columns]
    measured = (
        table[table["agree_psnr"].notna()] if "agree_psnr" in table.columns else table.iloc[0:0]
    )
    if measured.empty:
        return ""
    rows = [
        [_link(figures.run_label(row["bids_name"]), style.links.get(row["bids_name"]))]
        + [_fmt(row.get(c)) for c in columns]
        for _, row in measured.iterrows()
    ]
    strips = [
        figures.measure_strip(measured, column, title, unit, style)
        for column, (title, unit) in figures.AGREEMENT_MEASURES.items()
        if column in measured.columns
    ]
    plots = "".join(figures.agreement_figures(measured, style) + [s for s in strips if s])
    headers = ["Run"] + [AGREEMENT_COLUMNS[c] for c in columns]
    return f'<div class="figures">{plots}</div>' + _table(
        headers, rows, numeric=[False] + [True] * len(columns)
    )


def _strips(table, thumbnails: dict[str, np.ndarray], style: figures.Styling) -> str:
    outlier_measures = {}
    for _, row in table.iterrows():
        notes = row.get("outlier_measures") or ""
        notes = "" if notes == TOO_FEW_RUNS else notes
        outlier_measures[row["bids_name"]] = {n.split(" ")[0] for n in str(notes).split(";") if n}
    items = []
    vmin, vmax = THUMBNAIL_RANGE
    for _, row in table.iterrows():
        name = row["bids_name"]
        thumb = thumbnails.get(name)
        image = (
            f'<img alt="PSR slice of {escape(name)}" src="{figures.png_data_uri(thumb, vmin=vmin, vmax=vmax)}">'
            if thumb is not None
            else '<div class="thumb-empty">no map</div>'
        )
        hot = outlier_measures.get(name, set())
        chips = "".join(
            f'<span class="chip{" hot" if column in hot else ""}">{escape(label)} {_fmt(row.get(column))}</span>'
            for column, label in STRIP_MEASURES.items()
            if column in table.columns and not _is_missing(row.get(column))
        )
        if row.get("failure_reason") and not _is_missing(row.get("failure_reason")):
            chips += f'<span class="chip hot">{escape(str(row["failure_reason"]))}</span>'
        status = str(row.get("status", "ok"))
        group = "" if style.split is None else f" &middot; {escape(style.group_of(row))}"
        flagged = " flagged" if row.get("outlier") == True else ""  # noqa: E712 (n/a: not screened)
        items.append(
            f'<div class="strip {escape(status)}{flagged}">{image}'
            f'<div class="name">{_link(figures.run_label(name), style.links.get(name))}<br>'
            f'<span class="status {escape(status)}">{escape(status)}</span>{group}</div>'
            f'<div class="chips">{chips}</div></div>'
        )
    bar = (
        f'<p class="colorbar">Axial PSR slice, fixed scale: {vmin:g}'
        f'<img alt="colour scale" src="{figures.colorbar_uri()}">{vmax:g}</p>'
    )
    return bar + f'<div class="strips">{"".join(items)}</div>'


def render_report(
    table,
    *,
    outliers: list[Outlier],
    failures: list[Failure],
    thumbnails: dict[str, np.ndarray],
    split: str | None,
    links: dict[str, str],
    title: str,
    subtitle: str,
) -> str:
    """The whole ``group_PSR.html`` page as a string."""
    style = figures.styling_for(table, split, links)
    demo = (
        "model_is_demo" in table.columns and table["model_is_demo"].fillna(False).astype(bool).any()
    )
    banner = (
        '<p class="banner"><b>Demo model.</b> At least one map was synthesized with the embedded demo '
        "model, which was trained on a phantom cohort: the values are not PSR estimates of real anatomy.</p>"
        if demo
        else ""
    )
    screened = ", ".join(m for m in KEY_MEASURES if m in table.columns)
    agreement = _agreement(table, style)
    sections = [
        _section("summary", "Summary", _summary(table, failures) + banner),
        _section(
            "distributions",
            "PSR across the cohort",
            _distributions(table, style),
            "Each dot is one subject/session (hover for the value, click for its report); "
            "boxes span the interquartile range with the median line.",
        ),
        _section(
            "outliers",
            "Outliers",
            _outlier_table(outliers, links, measured_runs(table)),
            f"Robust z = (value - cohort median) / (1.4826 MAD); flagged when |z| &gt; "
            f"{OUTLIER_Z:g}, on measures with at least {MIN_RUNS_TO_FLAG} runs. "
            f"Screened: {escape(screened)}.",
        ),
        _section(
            "failures",
            "Failed and missing runs",
            _failure_table(failures),
            "Input subjects/sessions without a synthesized map, or with a crash file newer than their map.",
        ),
    ]
    if agreement:
        sections.append(
            _section(
                "agreement",
                "Agreement with measured PSR",
                agreement,
                "Image metrics in the brain mask (PSNR and SSIM with a fixed PSR range), voxel-wise "
                "Bland-Altman in white matter, and lesion-vs-NAWM ROC AUC for both maps.",
            )
        )
    sections += [
        _section("settings", "Model and settings", _settings(table)),
        _section("subjects", "Subjects", _strips(table, thumbnails, style)),
    ]
    nav = "".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in [
            ("summary", "Summary"),
            ("distributions", "Distributions"),
            ("outliers", "Outliers"),
            ("failures", "Failures"),
            ("agreement", "Agreement"),
            ("settings", "Settings"),
            ("subjects", "Subjects"),
        ]
        if anchor != "agreement" or agreement
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p><nav>{nav}</nav></header>"
        f"<main>{''.join(sections)}<footer>Generated by demist. The table behind this page is group_PSR.tsv.</footer></main>"
        f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )
