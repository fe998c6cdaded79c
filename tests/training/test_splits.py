"""Subject-grouped folds: disjoint, covering, balanced and reproducible from the seed."""

import pytest

from demist_bids.exceptions import UsageError
from demist_bids.training.splits import assign_folds, load_or_create_folds, read_folds, write_folds


def test_folds_partition_subjects_and_keep_sessions_together():
    subjects = ["01", "01", "02", "03", "03", "04", "05", "06", "07"]  # repeated = sessions
    folds = assign_folds(subjects, 3, seed=7)
    held = [folds.held_out(k) for k in range(3)]
    assert sorted(s for h in held for s in h) == sorted(set(subjects))
    assert max(map(len, held)) - min(map(len, held)) <= 1
    for k in range(3):
        assert not set(folds.held_out(k)) & set(folds.training(k))


def test_same_seed_same_split_other_seed_differs():
    subjects = [f"{i:02d}" for i in range(12)]
    assert assign_folds(subjects, 4, 1) == assign_folds(list(reversed(subjects)), 4, 1)
    assert assign_folds(subjects, 4, 1) != assign_folds(subjects, 4, 2)


def test_round_trip_and_mismatch(tmp_path):
    subjects = ["a", "b", "c", "d"]
    path = write_folds(assign_folds(subjects, 2, 3), tmp_path / "folds.tsv")
    assert read_folds(path) == assign_folds(subjects, 2, 3)
    assert load_or_create_folds(path, subjects, 2, 3) == read_folds(path)
    with pytest.raises(UsageError):
        load_or_create_folds(path, subjects, 2, 4)


def test_single_fold_trains_on_everyone_and_too_few_subjects_fail():
    folds = assign_folds(["a", "b"], 1, 0)
    assert folds.training(0) == ["a", "b"]
    with pytest.raises(UsageError):
        assign_folds(["a", "b"], 3, 0)
