"""Schedulers on a problem with a known answer: Gaussian data, whose exact noise predictor is analytic."""

from __future__ import annotations

import pytest
import torch

from demist_bids.inference.schedulers import SAMPLERS, make_scheduler, training_scheduler
from demist_bids.models.config import ScheduleConfig

SCHEDULE = ScheduleConfig()
MU, S = 0.2, 1.0
ABAR = training_scheduler(SCHEDULE).alphas_cumprod.double()


def _optimal_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """E[eps | x_t] for x_0 ~ N(MU, S^2)."""
    a, s = ABAR[t].sqrt(), (1 - ABAR[t]).sqrt()
    return (s * (x.double() - a * MU) / (a * a * S * S + s * s)).to(x.dtype)


def _run(name: str, steps: int, x: torch.Tensor, generator=None) -> tuple[torch.Tensor, list[int]]:
    scheduler = make_scheduler(name, SCHEDULE, steps)
    times = [int(t) for t in scheduler.timesteps]
    for t in times:
        x, _ = scheduler.step(_optimal_eps(x, t), t, x, generator=generator)
    return x, times


def _exact_ode(x_start: torch.Tensor, times: list[int]) -> torch.Tensor:
    """The probability-flow ODE keeps the standardised value; the last step predicts x0 from it."""
    first, last = times[0], times[-1]
    a0, s0 = ABAR[first].sqrt(), (1 - ABAR[first]).sqrt()
    z = (x_start - a0 * MU) / torch.sqrt(a0 * a0 * S * S + s0 * s0)
    a1, s1 = ABAR[last].sqrt(), (1 - ABAR[last]).sqrt()
    x_last = a1 * MU + torch.sqrt(a1 * a1 * S * S + s1 * s1) * z
    return (x_last - s1 * _optimal_eps(x_last, last)) / a1


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [5, 10, 20, 50])
def test_timesteps_descend_and_are_evenly_spaced(name, steps):
    times = [int(t) for t in make_scheduler(name, SCHEDULE, steps).timesteps]
    assert len(times) == steps and times[0] == 999
    assert len(set(b - a for a, b in zip(times, times[1:]))) <= 1  # one stride, matching MONAI's step


def test_monai_schedulers_have_clipping_off():
    for name in ("ddpm", "ddim"):
        assert make_scheduler(name, SCHEDULE, 10).clip_sample is False
    assert make_scheduler("ddpm", SCHEDULE, 1000).clip_sample is False


def test_dpm_solver_is_higher_order_than_ddim():
    x_start = torch.randn(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors = {}
    for name in ("ddim", "dpm++"):
        for steps in (10, 20):
            x, times = _run(name, steps, x_start.clone())
            errors[name, steps] = float((x - _exact_ode(x_start, times)).abs().mean())
    assert errors["dpm++", 10] < 0.01
    assert errors["dpm++", 10] < 0.25 * errors["ddim", 10]
    assert errors["ddim", 20] < errors["ddim", 10]  # DDIM converges too, only slower


def test_ddpm_reference_samples_the_data_distribution():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 1, generator=generator)
    x, _ = _run("ddpm", 1000, x, generator=generator)
    assert float(x.mean()) == pytest.approx(MU, abs=0.03)
    assert float(x.std()) == pytest.approx(S, abs=0.03)


def test_short_ddpm_is_ancestral_and_seeded():
    x = torch.randn(4000, 1, generator=torch.Generator().manual_seed(1))
    first, _ = _run("ddpm", 20, x.clone(), generator=torch.Generator().manual_seed(5))
    again, _ = _run("ddpm", 20, x.clone(), generator=torch.Generator().manual_seed(5))
    other, _ = _run("ddpm", 20, x.clone(), generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    # large strides lose some spread (x0's posterior variance is ignored), but not most of it
    assert float(first.mean()) == pytest.approx(MU, abs=0.05)
    assert 0.75 < float(first.std()) <= S


def test_unknown_sampler_and_bad_steps():
    with pytest.raises(ValueError):
        make_scheduler("euler", SCHEDULE, 10)
    with pytest.raises(ValueError):
        make_scheduler("ddim", SCHEDULE, 0)
