"""DDIM and DPM-Solver++ end at the clean sample for every step count; v networks feed them epsilon."""

from __future__ import annotations

import pytest
import torch

from demist_bids.inference.schedulers import make_scheduler, trailing_timesteps, training_scheduler
from demist_bids.models.config import ScheduleConfig


def _oracle_run(sampler: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    schedule = ScheduleConfig()
    abar = training_scheduler(schedule).alphas_cumprod
    x0 = torch.linspace(-1.5, 1.5, 64).view(1, 1, 4, 4, 4)
    scheduler = make_scheduler(sampler, schedule, steps)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:
        a = abar[int(t)]
        eps = (z - a.sqrt() * x0) / (1 - a).sqrt()  # the exact noise for this clean sample
        z, _ = scheduler.step(eps, int(t), z)
    return z, x0


@pytest.mark.parametrize("steps", [1, 2, 5, 7, 14, 20, 50])
@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_exact_noise_lands_on_the_clean_sample(sampler, steps):
    z, x0 = _oracle_run(sampler, steps)
    torch.testing.assert_close(z, x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [1, 3, 14, 50, 1000])
def test_trailing_grid_starts_at_the_last_timestep_and_is_evenly_spread(steps):
    grid = trailing_timesteps(1000, steps)
    assert len(grid) == steps and int(grid[0]) == 999
    assert (grid[:-1] > grid[1:]).all()
    gaps = (grid[:-1] - grid[1:]).float()
    if steps > 1:
        assert gaps.max() - gaps.min() <= 1
        assert int(grid[-1]) + 1 == pytest.approx(1000 / steps, abs=1)
