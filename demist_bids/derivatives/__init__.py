"""Writing the demist derivatives dataset: description, sidecars, atomic outputs."""
