"""Per-subject visual reports (NiPreps style): reportlets and their assembly."""
