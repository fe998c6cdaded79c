"""demist_bids.group: the ``group`` analysis level (cohort TSV and HTML report)."""

from demist_bids.group.run import run_group

__all__ = ["run_group"]
