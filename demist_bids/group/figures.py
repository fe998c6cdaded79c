"""The group report's figures, built from the cohort table.

Each function takes the table (one row per run) and returns inline SVG or a
base64 PNG, so :mod:`demist_bids.group.html` only lays them out.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from demist_bids.bids import scan_prefix
from demist_bids.group.svg import PALETTE, Mark, interval_plot, scatter_plot, strip_plot

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
    "uncertainty_mean": ("Mean uncertainty (std)", "PSR"),
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
