"""demist_bids.evaluation."""
