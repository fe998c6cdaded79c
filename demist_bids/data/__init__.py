"""demist_bids.data."""
