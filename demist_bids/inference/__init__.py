"""demist_bids.inference."""
