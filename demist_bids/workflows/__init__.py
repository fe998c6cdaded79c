"""demist_bids.workflows."""
