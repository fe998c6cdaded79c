"""demist_bids.derivatives."""
