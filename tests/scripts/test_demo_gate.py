"""scripts/record_demo_card.py: the declared gate that ships a candidate demo model or keeps the previous one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

HEADER = "method\tpsnr_mean\tpsnr_sd\tauc_combined_mean\tauc_combined_sd\tn_folds\n"


def _summary(folder: Path, psnr: float, auc: float) -> None:
    folder.mkdir(parents=True)
    (folder / "evaluation_summary.tsv").write_text(
        HEADER + f"linear\t20.0\tn/a\t0.95\tn/a\t1\ndemist\t{psnr}\tn/a\t{auc}\tn/a\t1\n")


@pytest.mark.parametrize("new, old, ship", [
    ((23.0, 0.99), (22.5, 0.98), True),
    ((22.8, 0.99), (23.4, 0.98), False),   # better AUC does not buy a worse PSNR
    ((23.5, 0.97), (23.4, 0.98), False),   # nor the other way round
    ((23.4, 0.98), (23.4, 0.98), True),    # at least as good
])
def test_the_candidate_ships_only_when_its_default_is_at_least_as_good(tmp_path, new, old, ship):
    from record_demo_card import shipping_decision

    _summary(tmp_path / "external16", *new)
    _summary(tmp_path / "external16_previous", *old)
    decided, reason = shipping_decision(tmp_path)
    assert decided is ship
    assert reason.startswith("ship the candidate" if ship else "keep the previous model")
    assert f"PSNR {new[0]:.3f} (candidate) vs {old[0]:.3f} (previous)" in reason


def test_the_session_10_cohort_has_its_own_folders_and_label(tmp_path):
    from record_demo_card import COHORTS, shipping_decision

    _summary(tmp_path / "external_anchor", 22.0, 0.97)
    _summary(tmp_path / "external_anchor_previous", 22.5, 0.97)
    decided, reason = shipping_decision(tmp_path, "external_anchor")
    assert decided is False and "PSNR 22.000 (candidate) vs 22.500 (previous)" in reason
    assert "seed 89" in COHORTS["external_anchor"] and "seed 67" in COHORTS["external16"]


@pytest.mark.parametrize("student, teacher, ship", [
    ((22.0, 0.970), (22.2, 0.972), True),    # within 0.3 dB and 0.005 AUC
    ((21.8, 0.972), (22.2, 0.972), False),   # 0.4 dB below
    ((22.5, 0.960), (22.2, 0.972), False),   # a better PSNR does not buy a worse lesion AUC
])
def test_the_student_ships_only_within_the_declared_tolerance(tmp_path, student, teacher, ship):
    from ship_student import student_decision

    folder = tmp_path / "external_student"
    folder.mkdir()
    (folder / "evaluation_summary.tsv").write_text(
        HEADER + f"demist\t{student[0]}\tn/a\t{student[1]}\tn/a\t1\n"
        f"demist-teacher\t{teacher[0]}\tn/a\t{teacher[1]}\tn/a\t1\n")
    decided, reason = student_decision(folder)
    assert decided is ship
    assert reason.startswith("ship the student" if ship else "keep the teacher alone")
    assert f"PSNR {student[0]:.3f} (student) vs {teacher[0]:.3f} (teacher)" in reason
    (folder / "evaluation_summary.tsv").write_text(HEADER + "demist\t22\tn/a\t0.97\tn/a\t1\n")
    with pytest.raises(SystemExit, match="demist-teacher"):
        student_decision(folder)
