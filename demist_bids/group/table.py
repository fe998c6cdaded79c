"""The cohort table: one row per subject/session, outlier flags, TSV output.

MRIQC's ``group_*.tsv`` is the model: ``bids_name`` first, one row per run,
plain values a spreadsheet or pandas reads directly (``n/a`` for missing).
Unlike MRIQC, failed and missing runs keep a row, with their status and
reason, so that the table accounts for every input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LOGGER = logging.getLogger("demist.group")

OUTLIER_Z = 3.5
"""|robust z| above this flags a run (Iglewicz & Hoaglin's modified z-score cut-off)."""
MIN_RUNS_TO_FLAG = 8
"""Fewest runs with a value for a measure to be screened: the median and MAD of fewer runs
are too noisy (three demo subjects flagged two of themselves)."""
TOO_FEW_RUNS = "too few runs to flag"
"""``outlier_measures`` of every row when fewer than :data:`MIN_RUNS_TO_FLAG` runs were measured
(``outlier`` is then n/a: not screened)."""

KEY_MEASURES = (
    "psr_median_brain",
    "psr_iqr_brain",
    "psr_median_wm",
    "psr_median_gm",
    "uncertainty_mean",
    "qc_registration_cost",
    "qc_brain_mask_volume_ml",
    "qc_snr_t1w",
    "qc_snr_flair",
)
"""Measures screened for outliers: PSR levels and spread, uncertainty, and input quality."""

LEADING_COLUMNS = (
    "bids_name",
    "subject",
    "session",
    "status",
    "failure_reason",
    "outlier",
    "outlier_measures",
)


@dataclass
class Outlier:
    """One measure of one run far from the cohort."""

    bids_name: str
    measure: str
    value: float
    cohort_median: float
    z: float


def build_table(rows: list[dict[str, Any]], participants=None):
    """The rows as a DataFrame: leading columns, then participants.tsv columns, then measures."""
    import pandas as pd

    table = pd.DataFrame(rows)
    for column in LEADING_COLUMNS:  # a stable schema: every leading column, even when empty
        if column not in table.columns:
            table[column] = None
    table["outlier"] = False  # filled in by flag_outliers
    table["outlier_measures"] = ""
    carried: list[str] = []
    if participants is not None and len(table):
        for column in participants.columns:
            if column in table.columns:
                LOGGER.warning(
                    "participants.tsv column %r clashes with a measure; not carried", column
                )
                continue
            table[column] = table["subject"].map(participants[column])
            carried.append(column)
    leading = list(LEADING_COLUMNS)
    rest = [c for c in table.columns if c not in leading and c not in carried]
    table = table[leading + carried + rest]
    return table.sort_values(
        ["subject", "session"], na_position="first", kind="stable"
    ).reset_index(drop=True)


def measured_runs(table, measures=KEY_MEASURES) -> int:
    """How many rows have a value for at least one screened measure."""
    present = [m for m in measures if m in table.columns]
    if not present or not len(table):
        return 0
    values = np.column_stack([np.asarray(table[m].apply(_as_float), dtype=float) for m in present])
    return int(np.isfinite(values).any(axis=1).sum())


def flag_outliers(table, *, measures=KEY_MEASURES, threshold: float = OUTLIER_Z,
                  min_runs: int = MIN_RUNS_TO_FLAG) -> list[Outlier]:
    """Mark runs whose robust z exceeds ``threshold`` on any key measure.

    Sets ``outlier`` (bool) and ``outlier_measures`` ("measure (z=...)", ';'
    separated) in place and returns every flagged measure. A measure is
    screened only where at least ``min_runs`` runs have a value; with fewer
    measured runs than that, nothing is screened: ``outlier`` is n/a and
    ``outlier_measures`` says :data:`TOO_FEW_RUNS`.
    """
    from demist_bids.evaluation.metrics import robust_z

    found: list[Outlier] = []
    if measured_runs(table, measures) < min_runs:
        table["outlier"] = None
        table["outlier_measures"] = TOO_FEW_RUNS
        LOGGER.info("%d measured runs: %s (outliers are screened from %d runs)",
                    measured_runs(table, measures), TOO_FEW_RUNS, min_runs)
        return found
    table["outlier"] = False
    table["outlier_measures"] = ""
    for measure in measures:
        if measure not in table.columns:
            continue
        values = np.asarray(table[measure].apply(_as_float), dtype=float)
        if np.isfinite(values).sum() < min_runs:
            continue
        z = robust_z(values)
        median = float(np.nanmedian(values))
        for index in np.nonzero(np.abs(np.nan_to_num(z)) > threshold)[0]:
            found.append(
                Outlier(
                    table.at[index, "bids_name"], measure, values[index], median, float(z[index])
                )
            )
            table.at[index, "outlier"] = True
            note = f"{measure} (z={z[index]:+.1f})"
            previous = table.at[index, "outlier_measures"]
            table.at[index, "outlier_measures"] = f"{previous};{note}" if previous else note
    for outlier in found:
        LOGGER.warning(
            "outlier: %s %s=%.4g (z=%+.1f)",
            outlier.bids_name,
            outlier.measure,
            outlier.value,
            outlier.z,
        )
    return found


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def write_tsv(table, path: Path) -> Path:
    """Write the table as a BIDS-style TSV (``n/a`` for missing values), atomically."""
    from demist_bids.utils.atomic import atomic_write_text

    text = table.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return atomic_write_text(Path(path), text)
