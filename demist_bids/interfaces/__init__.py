"""demist_bids.interfaces."""
