"""demist_bids.group."""
