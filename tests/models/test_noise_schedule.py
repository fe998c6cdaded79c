"""The noise schedule rescaled to a near-zero terminal SNR (``ScheduleConfig.terminal_snr``)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from demist_bids.inference.schedulers import make_scheduler, training_scheduler
from demist_bids.models.config import ModelConfig, ScheduleConfig
from demist_bids.models.demist import build_model
from demist_bids.models.noise_schedule import schedule_arguments
from tests.models.tiny import tiny_config

V = "v_prediction"


def _abar(**schedule) -> torch.Tensor:
    return training_scheduler(ScheduleConfig(**schedule)).alphas_cumprod.double()


def test_unset_is_the_bundle_schedule_as_monai_builds_it():
    bundle = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                           beta_end=0.0195).alphas_cumprod
    assert torch.equal(training_scheduler(ScheduleConfig()).alphas_cumprod, bundle)
    assert schedule_arguments(ScheduleConfig())["schedule"] == "scaled_linear_beta"
    assert float(bundle[-1] / (1 - bundle[-1])) == pytest.approx(1.42e-4, rel=0.01)  # what the rescale removes


@pytest.mark.parametrize("snr", [1e-4, 1e-6, 1e-7])
def test_rescaled_keeps_the_start_reaches_the_terminal_snr_and_stays_a_schedule(snr):
    bundle, rescaled = _abar(), _abar(prediction_type=V, terminal_snr=snr)
    assert float(rescaled[0]) == pytest.approx(float(bundle[0]), rel=1e-6)
    assert float(rescaled[-1] / (1 - rescaled[-1])) == pytest.approx(snr, rel=1e-3)
    assert bool((rescaled[1:] < rescaled[:-1]).all())  # betas in (0, 1): abar strictly decreasing
    # sqrt(abar) stays linear in the bundle's: (root - last) scaled by one constant
    root, base = rescaled.sqrt(), bundle.sqrt()
    ratio = (root[:-1] - root[-1]) / (base[:-1] - base[-1])
    assert float(ratio.max() - ratio.min()) < 1e-3
    # the low-noise end barely moves; the top loses the clean latent's share
    assert float(rescaled[100] / bundle[100]) > 0.99
    assert float(rescaled[899] / bundle[899]) < (0.5 if snr <= 1e-6 else 0.95)


def test_the_model_and_every_sampler_share_the_rescaled_schedule():
    config = tiny_config(schedule={"prediction_type": V, "terminal_snr": 1e-6})
    model = build_model(config)
    expected = _abar(prediction_type=V, terminal_snr=1e-6).float()
    assert torch.allclose(model.alphas_cumprod, expected)
    for name in ("ddpm", "ddim", "dpm++"):
        scheduler = make_scheduler(name, config.schedule, 4)
        assert torch.allclose(scheduler.alphas_cumprod.float(), expected)
    again = ModelConfig.from_dict(config.to_dict())
    assert again.schedule.terminal_snr == 1e-6
    assert ModelConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "schedule"}).schedule.terminal_snr is None


@pytest.mark.parametrize("bad, message", [
    (dict(prediction_type=V, terminal_snr=0.0), "> 0"),
    (dict(prediction_type=V, terminal_snr=-1e-6), "> 0"),
    (dict(prediction_type="epsilon", terminal_snr=1e-6), "v_prediction"),
])
def test_refused_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        ScheduleConfig(**bad)


def test_a_terminal_snr_above_the_schedules_own_is_refused():
    with pytest.raises(ValueError, match="not below"):
        training_scheduler(ScheduleConfig(prediction_type=V, terminal_snr=1e-3))


@pytest.mark.parametrize("steps", [1, 4, 20])
def test_ddim_fed_epsilon_from_a_v_oracle_lands_on_the_clean_latent(steps):
    """At SNR 1e-6 the clean estimate is recovered from epsilon by dividing by sqrt(abar) = 1e-3:
    float32 must still carry it (the v -> epsilon -> x0 round trip every sampler here makes)."""
    schedule = ScheduleConfig(prediction_type=V, terminal_snr=1e-6)
    scheduler = make_scheduler("ddim", schedule, steps)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, 8, generator=gen)
    z = torch.randn(x0.shape, generator=gen)
    abars = scheduler.alphas_cumprod
    first_estimate = None
    for t in scheduler.timesteps:
        a = abars[int(t)].float()
        eps_true = (z - a.sqrt() * x0) / (1 - a).sqrt()
        v = a.sqrt() * eps_true - (1 - a).sqrt() * x0  # what a perfect v network outputs
        eps = a.sqrt() * v + (1 - a).sqrt() * z  # DemistModel.to_noise
        z, estimate = scheduler.step(eps, t, z)
        first_estimate = estimate if first_estimate is None else first_estimate
    assert float((first_estimate - x0).abs().max()) < 5e-3
    assert float((z - x0).abs().max()) < 5e-3
