"""The ``group`` level: the cohort table from :mod:`demist_bids.group`, its page from
:mod:`demist_bids.reports.group`."""

from __future__ import annotations

import logging
from pathlib import Path

LOGGER = logging.getLogger("demist.group")


def run_group(config) -> int:
    """Write ``group_PSR.tsv`` and ``group_PSR.html`` into the output directory.

    Returns:
        0, or 65 when some run had an unusable image (the others are still measured).

    Raises:
        MissingInputError: the output directory holds no participant results (66).
    """
    from demist_bids.group.run import collect_group
    from demist_bids.reports.group import write_group_report

    results = collect_group(config)
    page = write_group_report(Path(config.execution.output_dir), results)
    LOGGER.info("wrote %s", page)
    return results.exit_code
