"""The charts of the reports: the group page's inline-SVG plots, its thumbnails and the
evaluation page's ROC curves.

The group plots are hand-written SVG rather than matplotlib output because
every point must be its own element: a ``<title>`` tooltip naming the run and a
link to the subject's report, as in MRIQC's group plots, in a file that opens
offline. Only three chart kinds are needed (strip, scatter, interval), which
keeps this small; styling comes from the shared stylesheet's classes
(``templates/style.css``). The builders at the end take the cohort table (one
row per run, :mod:`demist_bids.group.table`) and return SVG text or ``data:``
URIs, so the group template only lays them out.
"""

from __future__ import annotations

import base64
import io
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from demist_bids.bids import scan_prefix

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
FLAG_COLOR = "#d62728"


@dataclass
class Mark:
    """One data point: a run, with its tooltip text and optional link."""

    x: float
    y: float
    label: str
    href: str | None = None
    color: str = PALETTE[0]
    flagged: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [round(k * step, 12) for k in range(first, min(last, first + 4 * count) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.3g}" if value != 0 else "0"


def _padded_range(values: Iterable[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    # At least +-2% of the magnitude, so near-identical values do not blow float noise up.
    pad = max((high - low) * 0.08, 0.02 * max(abs(low), abs(high))) or 1.0
    return low - pad, high + pad


class _Frame:
    """Maps data to pixels inside margins and draws axes, ticks and labels."""

    def __init__(self, width, height, x_range, y_range, *, left=58, right=12, top=30, bottom=46):
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, right, top, bottom
        self.x_range, self.y_range = x_range, y_range

    def px(self, x: float) -> float:
        low, high = self.x_range
        return self.left + (x - low) / (high - low) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        low, high = self.y_range
        return (
            self.height
            - self.bottom
            - (y - low) / (high - low) * (self.height - self.top - self.bottom)
        )

    def axes(
        self, title: str, x_label: str, y_label: str, *, x_ticks=True, y_ticks=True
    ) -> list[str]:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        parts = [
            f'<text class="title" x="{self.width / 2:.1f}" y="18" text-anchor="middle">{escape(title)}</text>',
            f'<rect class="frame" x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}"/>',
        ]
        for tick in nice_ticks(*self.y_range) if y_ticks else []:
            y = self.py(tick)
            parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
            parts.append(
                f'<text class="tick" x="{x0 - 4}" y="{y + 3.5:.1f}" text-anchor="end">{_tick_label(tick)}</text>'
            )
        if x_ticks:
            for tick in nice_ticks(*self.x_range):
                x = self.px(tick)
                parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{y1}" y2="{y0}"/>')
                parts.append(
                    f'<text class="tick" x="{x:.1f}" y="{y0 + 14}" text-anchor="middle">{_tick_label(tick)}</text>'
                )
        parts.append(
            f'<text class="label" x="{(x0 + x1) / 2:.1f}" y="{self.height - 8}" text-anchor="middle">{escape(x_label)}</text>'
        )
        yc = (y0 + y1) / 2
        parts.append(
            f'<text class="label" x="14" y="{yc:.1f}" text-anchor="middle" transform="rotate(-90 14 {yc:.1f})">{escape(y_label)}</text>'
        )
        return parts

    def svg(self, parts: Sequence[str], role_label: str) -> str:
        body = "\n".join(parts)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(role_label)}" '
            f'width="{self.width}" height="{self.height}" viewBox="0 0 {self.width} {self.height}">\n{body}\n</svg>'
        )


def _dot(mark: Mark, cx: float, cy: float) -> str:
    ring = f'<circle class="flag" cx="{cx:.1f}" cy="{cy:.1f}" r="7.5"/>' if mark.flagged else ""
    dot = (
        f'<circle class="dot" cx="{cx:.1f}" cy="{cy:.1f}" r="4.2" fill="{mark.color}">'
        f"<title>{escape(mark.label)}</title></circle>"
    )
    inner = ring + dot
    return f'<a href="{escape(mark.href)}">{inner}</a>' if mark.href else inner


def _jitter(label: str) -> float:
    """A stable offset in [-1, 1] per point, so reruns draw the same picture."""
    return (zlib.crc32(label.encode()) % 1000) / 500.0 - 1.0


def strip_plot(
    groups: dict[str, list[Mark]], *, title: str, y_label: str, width: int = 270, height: int = 250
) -> str:
    """One column per group: the interquartile box, the median line and every run as a dot."""
    names = list(groups)
    values = [m.y for marks in groups.values() for m in marks]
    frame = _Frame(width, height, (-0.5, len(names) - 0.5), _padded_range(values))
    parts = frame.axes(title, "", y_label, x_ticks=False)
    half = 0.32
    for index, name in enumerate(names):
        ys = sorted(m.y for m in groups[name] if math.isfinite(m.y))
        cx = frame.px(index)
        parts.append(
            f'<text class="tick" x="{cx:.1f}" y="{height - 30}" text-anchor="middle">{escape(name)}</text>'
        )
        if ys:
            q25, q50, q75 = (_quantile(ys, q) for q in (0.25, 0.5, 0.75))
            box_w = frame.px(index + half) - frame.px(index - half)
            parts.append(
                f'<rect class="box" x="{frame.px(index - half):.1f}" y="{frame.py(q75):.1f}" '
                f'width="{box_w:.1f}" height="{max(frame.py(q25) - frame.py(q75), 1):.1f}"/>'
            )
            parts.append(
                f'<line class="median" x1="{frame.px(index - half):.1f}" x2="{frame.px(index + half):.1f}" '
                f'y1="{frame.py(q50):.1f}" y2="{frame.py(q50):.1f}"/>'
            )
        for mark in groups[name]:
            if math.isfinite(mark.y):
                parts.append(
                    _dot(mark, frame.px(index + 0.22 * _jitter(mark.label)), frame.py(mark.y))
                )
    return frame.svg(parts, title)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def scatter_plot(
    marks: list[Mark],
    *,
    title: str,
    x_label: str,
    y_label: str,
    identity: bool = False,
    hlines: Sequence[tuple[float, str]] = (),
    width: int = 340,
    height: int = 300,
) -> str:
    """Points with optional identity line (agreement) and labelled horizontal lines (bias, limits)."""
    marks = [m for m in marks if math.isfinite(m.x) and math.isfinite(m.y)]
    xs = [m.x for m in marks]
    ys = [m.y for m in marks] + [value for value, _ in hlines if math.isfinite(value)]
    x_range, y_range = _padded_range(xs), _padded_range(ys)
    if identity:
        x_range = y_range = _padded_range(xs + ys)
    frame = _Frame(width, height, x_range, y_range)
    parts = frame.axes(title, x_label, y_label)
    if identity:
        low, high = x_range
        parts.append(
            f'<line class="ref" x1="{frame.px(low):.1f}" y1="{frame.py(low):.1f}" '
            f'x2="{frame.px(high):.1f}" y2="{frame.py(high):.1f}"/>'
        )
    for value, text in hlines:
        if math.isfinite(value):
            y = frame.py(value)
            parts.append(
                f'<line class="ref" x1="{frame.left}" x2="{width - frame.right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            )
            parts.append(
                f'<text class="note" x="{width - frame.right - 3}" y="{y - 3:.1f}" text-anchor="end">{escape(text)}</text>'
            )
    parts.extend(_dot(m, frame.px(m.x), frame.py(m.y)) for m in marks)
    return frame.svg(parts, title)


def interval_plot(
    rows: list[tuple[Mark, float, float]], *, title: str, x_label: str, width: int = 520
) -> str:
    """One line per run: a point estimate (``Mark.x``) with its interval, runs stacked vertically."""
    rows = [r for r in rows if math.isfinite(r[0].x)]
    height = 70 + 18 * max(len(rows), 1)
    values = [r[0].x for r in rows] + [v for r in rows for v in r[1:] if math.isfinite(v)] + [0.0]
    frame = _Frame(width, height, _padded_range(values), (len(rows) - 0.5, -0.5), left=150)
    parts = frame.axes(title, x_label, "", y_ticks=False)
    zero = frame.px(0.0)
    parts.append(
        f'<line class="ref" x1="{zero:.1f}" x2="{zero:.1f}" y1="{frame.top}" y2="{height - frame.bottom}"/>'
    )
    for index, (mark, low, high) in enumerate(rows):
        y = frame.py(index)
        name = escape(mark.label.split(":")[0])
        text = f'<text class="tick" x="{frame.left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{name}</text>'
        parts.append(f'<a href="{escape(mark.href)}">{text}</a>' if mark.href else text)
        if math.isfinite(low) and math.isfinite(high):
            parts.append(
                f'<line class="interval" x1="{frame.px(low):.1f}" x2="{frame.px(high):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            )
        parts.append(_dot(mark, frame.px(mark.x), y))
    return frame.svg(parts, title)


# -- the group page's figures, from the cohort table ----------------------------------------

TISSUE_MEASURES = {
    "psr_median_brain": "brain",
    "psr_median_wm": "white matter",
    "psr_median_gm": "grey matter",
    "psr_median_nawm": "NAWM",
    "psr_median_lesion": "lesions",
}
"""Per-tissue PSR medians, in display order, with their titles."""

QC_MEASURES = {
    "psr_iqr_brain": ("PSR IQR in brain", "PSR"),
    "uncertainty_mean": ("Mean std across samples", "PSR"),
    "lesion_auc_combined": ("Lesion vs NAWM AUC", "ROC AUC"),
    "qc_registration_cost": ("Registration cost", "cost"),
    "qc_brain_mask_volume_ml": ("Brain mask volume", "mL"),
    "qc_snr_t1w": ("T1w SNR", "SNR"),
    "qc_snr_flair": ("FLAIR SNR", "SNR"),
    "runtime_s": ("Runtime", "seconds"),
}
"""Other screened or informative measures: (title, unit)."""

AGREEMENT_MEASURES = {
    "agree_psnr": ("PSNR in brain", "dB"),
    "agree_ssim": ("SSIM in brain", "SSIM"),
    "agree_ncc": ("NCC in brain", "NCC"),
    "agree_l1": ("L1 in brain", "PSR"),
}


def run_label(bids_name: str) -> str:
    """The short display name of a run: ``sub-01_ses-1`` for ``sub-01_ses-1_desc-synth_PSRmap``."""
    from demist_bids.derivatives.outputs import subject_session

    try:
        subject, session = subject_session(bids_name)
    except ValueError:
        return bids_name
    return scan_prefix(subject, session)


@dataclass
class Styling:
    """How runs are drawn: group colour, outlier ring, link target."""

    split: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    colors: dict[str, str] = field(default_factory=dict)

    def group_of(self, row) -> str:
        if self.split is None:
            return "all"
        value = row.get(self.split)
        return (
            "n/a"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(value)
        )

    def mark(self, row, x: float, y: float, text: str) -> Mark:
        return Mark(
            x=x,
            y=y,
            label=f"{run_label(row['bids_name'])}: {text}",
            href=self.links.get(row["bids_name"]),
            color=self.colors.get(self.group_of(row), PALETTE[0]),
            flagged=row.get("outlier") == True,  # noqa: E712 (None: too few runs to screen)
        )


def styling_for(table, split: str | None, links: dict[str, str]) -> Styling:
    """Fix one colour per group so every figure and the legend agree."""
    style = Styling(split=split, links=links)
    with_map = (
        table[table["psr_median_brain"].notna()] if "psr_median_brain" in table.columns else table
    )
    groups = sorted({style.group_of(row) for _, row in with_map.iterrows()})
    style.colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(groups)}
    return style


def _value(row, column: str) -> float:
    try:
        return float(row.get(column))
    except (TypeError, ValueError):
        return math.nan


def measure_strip(table, column: str, title: str, unit: str, style: Styling) -> str | None:
    """A strip plot of one measure split by group; None when no run has a value."""
    groups: dict[str, list[Mark]] = {name: [] for name in style.colors}
    for _, row in table.iterrows():
        value = _value(row, column)
        if math.isfinite(value):
            groups.setdefault(style.group_of(row), []).append(
                style.mark(row, 0, value, f"{value:.4g}")
            )
    groups = {name: marks for name, marks in groups.items() if marks}
    return strip_plot(groups, title=title, y_label=unit) if groups else None


def _pairs(rows, measured: str, synthesized: str) -> list[tuple[Any, float, float]]:
    """(row, measured value, synthesized value) for rows where both are finite."""
    pairs = [(row, _value(row, measured), _value(row, synthesized)) for row in rows]
    return [(row, m, s) for row, m, s in pairs if math.isfinite(m) and math.isfinite(s)]


def _versus(pairs, style: Styling, *, title: str, unit: str) -> str:
    """Synthesized against measured with the identity line."""
    return scatter_plot(
        [style.mark(row, m, s, f"measured {m:.4g}, synthesized {s:.4g}") for row, m, s in pairs],
        title=title,
        x_label=f"measured {unit}",
        y_label=f"synthesized {unit}",
        identity=True,
    )


def _bland_altman_of_medians(pairs, style: Styling) -> str:
    """Cohort Bland-Altman: per-run WM medians, bias and 95% limits across runs."""
    means = [(m + s) / 2 for _, m, s in pairs]
    diffs = [s - m for _, m, s in pairs]
    bias = float(np.mean(diffs))
    lines = [(bias, f"bias {bias:+.4f}")]
    if len(diffs) > 1:
        sd = float(np.std(diffs, ddof=1))
        lines += [(bias - 1.96 * sd, "-1.96 SD"), (bias + 1.96 * sd, "+1.96 SD")]
    marks = [
        style.mark(row, x, d, f"mean {x:.4g}, difference {d:+.4g}")
        for (row, _, _), x, d in zip(pairs, means, diffs)
    ]
    return scatter_plot(
        marks,
        title="Bland-Altman of WM medians",
        x_label="mean of synthesized and measured",
        y_label="synthesized - measured",
        hlines=lines,
    )


def agreement_figures(table, style: Styling) -> list[str]:
    """Synthesized vs measured: WM medians, their Bland-Altman, voxel-wise limits, lesion AUCs."""
    if "agree_mse" not in table.columns:
        return []
    rows = [row for _, row in table.iterrows() if math.isfinite(_value(row, "agree_mse"))]
    figures = []
    medians = _pairs(rows, "psr_median_wm_measured", "psr_median_wm")
    if medians:
        figures.append(_versus(medians, style, title="WM median PSR", unit="PSR"))
        figures.append(_bland_altman_of_medians(medians, style))
    intervals = [
        (
            style.mark(row, _value(row, "ba_wm_bias"), 0, f"bias {_value(row, 'ba_wm_bias'):+.4g}"),
            _value(row, "ba_wm_loa_low"),
            _value(row, "ba_wm_loa_high"),
        )
        for row in rows
    ]
    if any(math.isfinite(mark.x) for mark, _, _ in intervals):
        figures.append(
            interval_plot(
                intervals,
                title="Voxel-wise Bland-Altman in WM (bias, 95% limits)",
                x_label="synthesized - measured PSR",
            )
        )
    aucs = _pairs(rows, "lesion_auc_combined_measured", "lesion_auc_combined")
    if aucs:
        figures.append(_versus(aucs, style, title="Lesion vs NAWM AUC (combined)", unit="AUC"))
    return figures


def png_data_uri(image: np.ndarray, *, vmin: float, vmax: float, cmap: str = "viridis") -> str:
    """A 2D array as an inline PNG (``data:`` URI); NaN is transparent."""
    from matplotlib import colormaps
    from matplotlib.image import imsave

    colormap = colormaps[cmap].with_extremes(bad=(0, 0, 0, 0))
    buffer = io.BytesIO()
    imsave(buffer, np.ma.masked_invalid(image), vmin=vmin, vmax=vmax, cmap=colormap, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colorbar_uri(*, cmap: str = "viridis") -> str:
    """A horizontal colour ramp for the thumbnails' legend."""
    return png_data_uri(np.tile(np.linspace(0, 1, 128), (8, 1)), vmin=0, vmax=1, cmap=cmap)


def roc_svg(curves: Sequence[tuple[str, np.ndarray, np.ndarray, bool]], *, title: str) -> str:
    """ROC curves (NAWM positive, lesion negative) as inline SVG text.

    ``curves``: (label, NAWM scores, lesion scores, dashed) in legend order; a curve
    without scores on either side is left out.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, nawm, lesion, dashed in curves:
        if nawm.size == 0 or lesion.size == 0:
            continue
        labels = np.r_[np.ones(nawm.size), np.zeros(lesion.size)]
        scores = np.r_[nawm, lesion]
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = roc_auc_score(labels, scores)
        ax.plot(fpr, tpr, "--" if dashed else "-", label=f"{label} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="False positive rate (lesion voxels)", ylabel="True positive rate (NAWM voxels)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.find("<svg"):]
