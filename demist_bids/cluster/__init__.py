"""``demist-slurm``: one SLURM array task per participant (or session), then a group job.

The generated sbatch scripts are plain bash a cluster user can read, copy and
adapt; ``--dry-run`` prints them instead of submitting.
"""
