"""Subject-grouped k-fold cross-validation splits, written to disk.

Every scan (session) of a subject lands in the same fold, so no subject is ever
seen in training and evaluation at once. The assignment depends only on the
sorted subject labels and the seed, so the same cohort and seed always give the
same folds; the table written to ``folds.tsv`` is what later stages read back,
which keeps a resumed or stage-by-stage run on exactly the same split.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from demist_bids.exceptions import UsageError
from demist_bids.utils.atomic import atomic_write_text


@dataclass(frozen=True)
class FoldAssignment:
    """Which fold each subject is held out in (0-based)."""

    fold_of_subject: dict[str, int]
    n_folds: int
    seed: int

    def held_out(self, fold: int) -> list[str]:
        """Subjects evaluated in ``fold``."""
        return sorted(s for s, f in self.fold_of_subject.items() if f == fold)

    def training(self, fold: int) -> list[str]:
        """Subjects trained on for ``fold`` (everyone when there is one fold)."""
        if self.n_folds == 1:
            return sorted(self.fold_of_subject)
        return sorted(s for s, f in self.fold_of_subject.items() if f != fold)


def assign_folds(subjects: Sequence[str], n_folds: int, seed: int) -> FoldAssignment:
    """Shuffle the unique subjects with ``seed`` and deal them round-robin into folds.

    Round-robin dealing keeps fold sizes within one subject of each other.
    ``n_folds == 1`` means "train on everything": no subject is held out.
    """
    unique = sorted(set(subjects))
    if n_folds < 1:
        raise UsageError(f"--folds must be at least 1, got {n_folds}")
    if n_folds > 1 and len(unique) < n_folds:
        raise UsageError(
            f"{n_folds}-fold cross-validation needs at least {n_folds} subjects "
            f"with a PSR map; found {len(unique)}"
        )
    order = list(unique)
    random.Random(seed).shuffle(order)
    if n_folds == 1:
        mapping = {s: -1 for s in order}
    else:
        mapping = {s: i % n_folds for i, s in enumerate(order)}
    return FoldAssignment(dict(sorted(mapping.items())), n_folds, seed)


def write_folds(assignment: FoldAssignment, path: Path) -> Path:
    """Write ``subject<TAB>fold`` rows (with a header) plus the seed as a comment."""
    lines = [f"# n_folds={assignment.n_folds} seed={assignment.seed}", "participant_id\tfold"]
    lines += [f"sub-{s}\t{f}" for s, f in assignment.fold_of_subject.items()]
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_folds(path: Path) -> FoldAssignment:
    """Read a table written by :func:`write_folds`."""
    text = Path(path).read_text().splitlines()
    header = dict(kv.split("=") for kv in text[0].lstrip("# ").split())
    rows = csv.DictReader(text[1:], delimiter="\t")
    mapping = {r["participant_id"].removeprefix("sub-"): int(r["fold"]) for r in rows}
    return FoldAssignment(mapping, int(header["n_folds"]), int(header["seed"]))


def load_or_create_folds(
    path: Path, subjects: Sequence[str], n_folds: int, seed: int
) -> FoldAssignment:
    """Reuse ``path`` when it matches the cohort and settings, else create and write it.

    A mismatch (other subjects, fold count or seed) is an error rather than a
    silent re-split: it would mix models trained on different splits.
    """
    path = Path(path)
    wanted = assign_folds(subjects, n_folds, seed)
    if path.exists():
        existing = read_folds(path)
        if existing != wanted:
            raise UsageError(
                f"{path} holds a different split (other subjects, folds or seed); "
                "remove it or use another output directory"
            )
        return existing
    write_folds(wanted, path)
    return wanted
