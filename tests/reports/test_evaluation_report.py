"""Results tables and page: one row per method and fold, Table 1 summary, paired tests."""

import numpy as np
import pandas as pd

from demist_bids.reports.evaluation import write_evaluation
from demist_bids.evaluation.statistics import best_baseline, paired_tests


def _per_scan():
    rng = np.random.default_rng(1)
    rows = []
    for fold in (0, 1):
        for scan in range(3):
            name = f"sub-{fold}{scan}"
            for method, psnr in (("demist", 26.0), ("linear", 20.0), ("lora", 24.0)):
                rows.append(
                    {"method": method, "fold": fold, "bids_name": name,
                     "psnr": psnr + rng.normal(), "ssim": 0.8, "mse": 1e-3, "l1": 0.02,
                     "ncc": 0.9, "auc_proximal": 0.8, "auc_distal": 0.85, "auc_combined": 0.83}
                )
            rows.append({"method": "measured", "fold": fold, "bids_name": name,
                         "auc_proximal": 0.9, "auc_distal": 0.92, "auc_combined": 0.91})
    return pd.DataFrame(rows)


def test_best_baseline_and_paired_tests():
    per_scan = _per_scan()
    synthesized = per_scan[per_scan.method != "measured"]
    assert best_baseline(synthesized, "demist") == "lora"
    tests = paired_tests(synthesized, "demist", "lora").set_index("measure")
    assert tests.loc["psnr", "n_scans"] == 6
    assert tests.loc["psnr", "mean_difference"] > 0
    assert 0 < tests.loc["psnr", "wilcoxon_p"] <= 1


def test_write_evaluation(tmp_path):
    rng = np.random.default_rng(2)
    roc = {"demist": (rng.normal(1, 1, 200), rng.normal(0, 1, 50)),
           "measured": (rng.normal(2, 1, 200), rng.normal(0, 1, 50))}
    paths = write_evaluation(_per_scan(), roc, tmp_path)
    folds = pd.read_csv(paths["folds"], sep="\t")
    assert len(folds) == 4 * 2 and set(folds.method) == {"demist", "linear", "lora", "measured"}
    assert folds.groupby("method").size().eq(2).all()
    summary = pd.read_csv(paths["summary"], sep="\t").set_index("method")
    assert summary.loc["measured", "psnr_mean"] != summary.loc["measured", "psnr_mean"]  # n/a
    page = paths["html"].read_text()
    assert "Table 1" in page and "<svg" in page and "DEMIST" in page and "&plusmn;" in page


def test_the_run_notes_are_plain_text_escaped_in_one_paragraph(tmp_path):
    notes = "Preset small, 2 folds. The <linear> baseline & DEMIST."
    html = write_evaluation(_per_scan(), {}, tmp_path, notes=notes)["html"].read_text()
    assert "<p>Preset small, 2 folds. The &lt;linear&gt; baseline &amp; DEMIST.</p>" in html
    assert "<linear>" not in html
    assert "<p></p>" not in write_evaluation(_per_scan(), {}, tmp_path / "none")["html"].read_text()
