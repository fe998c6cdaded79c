"""Tests that run demist on a real (local) SLURM cluster."""
