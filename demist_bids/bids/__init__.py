"""demist_bids.bids."""
