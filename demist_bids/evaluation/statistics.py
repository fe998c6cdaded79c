"""Paired comparisons between DEMIST and a baseline on the same held-out scans.

Every method is evaluated on the same scans, so the natural test is paired:
the Wilcoxon signed-rank test on the per-scan differences (no normality
assumption; exact for small samples), with the paired t-test beside it. Which
baseline is "best" is decided on the fold-mean PSNR, the paper's headline
measure.
"""

from __future__ import annotations

import math

import pandas as pd

HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "ncc": True,
    "mse": False,
    "l1": False,
    "auc_proximal": True,
    "auc_distal": True,
    "auc_combined": True,
    "lesion_auc_proximal": True,
    "lesion_auc_distal": True,
    "lesion_auc_combined": True,
}
"""The measures compared, and which direction is an improvement."""


def best_baseline(per_scan: pd.DataFrame, method: str, *, measure: str = "psnr") -> str | None:
    """The other method with the best mean ``measure`` (None when there is none)."""
    others = per_scan[(per_scan["method"] != method) & per_scan[measure].notna()]
    if others.empty:
        return None
    means = others.groupby("method")[measure].mean()
    return str(means.idxmax() if HIGHER_IS_BETTER[measure] else means.idxmin())


def comparisons(methods, method: str = "demist", *, exclude=()) -> list[tuple[str, str]]:
    """(method, baseline) pairs to test: ``method`` against every other method not in ``exclude``,
    and the paper's sampler against the two things it must beat (no diffusion, the linear baseline)."""
    present = [m for m in dict.fromkeys(methods) if m not in exclude]
    pairs = [(method, other) for other in present if other != method] if method in present else []
    if "demist-paper" in present and method != "demist-paper":
        pairs += [("demist-paper", other) for other in ("no-diffusion", "linear") if other in present]
    return pairs


def paired_tests(per_scan: pd.DataFrame, method: str, baseline: str) -> pd.DataFrame:
    """One row per measure: mean difference (method - baseline) and two-sided p-values.

    Args:
        per_scan: one row per (method, scan) with a ``bids_name`` column and the
            measures of :data:`HIGHER_IS_BETTER` as columns.
    """
    from scipy import stats

    rows = []
    left = per_scan[per_scan["method"] == method].set_index("bids_name")
    right = per_scan[per_scan["method"] == baseline].set_index("bids_name")
    for measure in HIGHER_IS_BETTER:
        if measure not in left or measure not in right:
            continue
        pair = pd.concat([left[measure], right[measure]], axis=1, keys=["a", "b"]).dropna()
        diff = pair["a"] - pair["b"]
        row = {
            "measure": measure,
            "method": method,
            "baseline": baseline,
            "n_scans": len(pair),
            "mean_difference": float(diff.mean()) if len(pair) else math.nan,
            "wilcoxon_p": math.nan,
            "ttest_p": math.nan,
        }
        if len(pair) >= 2 and (diff != 0).any():
            row["wilcoxon_p"] = float(stats.wilcoxon(pair["a"], pair["b"]).pvalue)
            if diff.std(ddof=1) > 0:
                row["ttest_p"] = float(stats.ttest_rel(pair["a"], pair["b"]).pvalue)
        rows.append(row)
    return pd.DataFrame(rows)
