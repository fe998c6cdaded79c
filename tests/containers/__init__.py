"""Tests of the container recipes (Dockerfile, Singularity.def) and the install they describe."""
