"""Ship a distilled student with the demo model, or not, by the gate declared with its test cohort.

Usage: python scripts/ship_student.py STUDENT_DIR DEST_DIR EVALUATION_DIR
(step 6 of scripts/make_demo_model.sh). EVALUATION_DIR is ``demist-evaluate`` of the teacher
with its student on the declared cohort (seed 131): its ``demist`` row is the student and its
``demist-teacher`` row the teacher's own default sampler, on the same scans.

The gate, declared before the cohort was generated: the student's PSNR at least the teacher
default's minus 0.3 dB (issue 19's tolerance for a fast sampler) and its voxel-wise lesion AUC
(``auc_combined``) at least the teacher default's minus 0.005. When it passes, the student goes
to ``DEST_DIR/student/`` (the participant level's default from then on) with the test table in
its card; the teacher's own files are not touched (its checksum is the student's
``teacher_sha256``). Prints the decision in one line.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PSNR_TOLERANCE_DB = 0.3
AUC_TOLERANCE = 0.005
COHORT = ("the session-11 test cohort of issue 19 (8 fresh demist-phantom subjects, seed 131, scale 0.6, declared "
          "in scripts/make_demo_model.sh before it was generated), scored once; demist is this student, "
          "demist-teacher the demo model's own default sampler")


def student_decision(evaluation: Path) -> tuple[bool, str]:
    """(ship the student?, the reason in one line) from the cohort's evaluation summary."""
    from demist_bids.training.model_card import evaluation_summary

    rows = {row.get("method"): row for row in evaluation_summary(Path(evaluation))}
    if "demist" not in rows or "demist-teacher" not in rows:
        raise SystemExit(f"{evaluation} has no demist and demist-teacher rows: evaluate the teacher with its student")
    checks = []
    for key, name, tolerance in (("psnr_mean", "PSNR", PSNR_TOLERANCE_DB), ("auc_combined_mean", "lesion AUC",
                                                                             AUC_TOLERANCE)):
        student, teacher = float(rows["demist"][key]), float(rows["demist-teacher"][key])
        checks.append((student >= teacher - tolerance,
                       f"{name} {student:.3f} (student) vs {teacher:.3f} (teacher), tolerance {tolerance:g}"))
    ship = all(ok for ok, _ in checks)
    return ship, ("ship the student: " if ship else "keep the teacher alone: ") + "; ".join(t for _, t in checks)


def main(student: Path, dest: Path, evaluation: Path) -> None:
    from demist_bids.inference.student import STUDENT_DIR
    from demist_bids.models.io import read_model_config, write_model_config
    from demist_bids.training.model_card import append_external_validation

    ship, reason = student_decision(evaluation)
    print(reason)
    if not ship:
        return
    staged = dest / f"{STUDENT_DIR}.new"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(student, staged)
    config = read_model_config(staged)
    config.card = {**config.card, "student_decision": reason}
    write_model_config(staged, config)
    append_external_validation(staged, evaluation / "evaluation_summary.tsv", COHORT)
    shutil.rmtree(dest / STUDENT_DIR, ignore_errors=True)
    staged.rename(dest / STUDENT_DIR)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
