"""A session-wide local SLURM cluster, started once and always stopped."""

from __future__ import annotations

import pytest

from tests.cluster.localslurm import LocalSlurm, SlurmUnavailable, ensure_installed


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node SLURM cluster; the test is skipped, with the reason, if none can start."""
    root = tmp_path_factory.mktemp("slurm")
    cluster = LocalSlurm(root)
    try:
        ensure_installed(root / "apt.log")
        cluster.start()
    except SlurmUnavailable as exc:
        cluster.stop()
        pytest.skip(f"no local SLURM cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A 3-subject demist-phantom cohort (the demo's settings) with measured PSR derivatives."""
    from demist_bids.phantom import generate_cohort

    bids = tmp_path_factory.mktemp("cohort") / "bids"
    generate_cohort(bids, subjects=3, seed=2024, scale=0.6)
    return bids
