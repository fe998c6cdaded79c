"""demist_bids.models."""
