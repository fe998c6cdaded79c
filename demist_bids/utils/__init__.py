"""Small helpers shared across layers (no torch, no BIDS)."""
