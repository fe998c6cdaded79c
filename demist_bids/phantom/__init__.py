"""demist_bids.phantom."""
