"""Rendezvous from torchrun or SLURM variables, and checkpoint RNG round trip."""

import random

import numpy as np
import torch

from demist_bids.training.checkpoints import load_checkpoint, save_checkpoint, restore_rng_state
from demist_bids.training.distributed import rendezvous_from_environment


def test_rendezvous_sources():
    assert rendezvous_from_environment({}) == (0, 1, 0)
    assert rendezvous_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    assert rendezvous_from_environment(slurm) == (3, 4, 1)
    assert rendezvous_from_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == (0, 1, 0)
    assert rendezvous_from_environment({**slurm, "RANK": "0", "WORLD_SIZE": "2"}) == (0, 2, 0)


def test_checkpoint_restores_random_streams(tmp_path):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    save_checkpoint(tmp_path, {"step": 5, "weights": {"w": torch.ones(2)}})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    state = load_checkpoint(tmp_path)
    assert state["step"] == 5 and torch.equal(state["weights"]["w"], torch.ones(2))
    restore_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    assert load_checkpoint(tmp_path / "none") is None
