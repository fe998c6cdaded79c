"""demist_bids.training."""
