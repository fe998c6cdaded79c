"""demist_bids.group: the ``group`` analysis level's data (cohort table, measures, outliers).

The page is drawn by :mod:`demist_bids.reports.group`; :mod:`demist_bids.cli.group` runs both.
"""

from demist_bids.group.run import GroupResults, collect_group

__all__ = ["GroupResults", "collect_group"]
