"""demist_bids.reports."""
