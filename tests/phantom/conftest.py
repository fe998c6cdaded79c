"""A small phantom cohort generated once per test session and shared read-only."""

from __future__ import annotations

import pytest

from demist_bids.phantom import generate_cohort

COHORT_ARGS = dict(subjects=3, seed=7, sessions=2, control_fraction=0.34, scale=0.4)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """(root, scans) of a 3-subject, 2-session cohort at scale 0.4 (one control)."""
    root = tmp_path_factory.mktemp("phantom") / "bids"
    scans = generate_cohort(root, **COHORT_ARGS)
    return root, scans
