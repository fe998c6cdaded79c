"""demist_bids.cli."""
