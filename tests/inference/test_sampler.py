"""synthesize(): determinism, uncertainty, any volume size, whole volume vs sliding window."""

from __future__ import annotations

import numpy as np
import pytest

from demist_bids.inference.grid import content_box, crop_to_original, pad_to_multiple
from demist_bids.inference.memory import estimate_bytes, plan_inference
from demist_bids.inference.sampler import chain_seed, synthesize
from demist_bids.models.config import preset
from demist_bids.models.demist import build_model
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config


@pytest.fixture(scope="module")
def model():
    model = build_model(tiny_config("full", psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    return model


def _condition(shape, seed=0):
    """A smooth T1w/FLAIR-like pair: a blob on noise, both in [0, 1]."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = np.exp(-sum(g**2 for g in grids) * 2.0)
    t1w = np.clip(blob + 0.05 * rng.standard_normal(shape), 0, 1)
    flair = np.clip(0.6 * blob + 0.05 * rng.standard_normal(shape), 0, 1)
    return np.stack([t1w, flair]).astype(np.float32)


@pytest.mark.parametrize("shape", [(13, 17, 19), (33, 40, 31), (32, 32, 32)])
def test_pad_and_crop_round_trip(shape):
    volume = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    padded, crop = pad_to_multiple(volume, 16)
    assert padded.shape[0] == 2 and all(n % 16 == 0 and n >= m for n, m in zip(padded.shape[1:], shape))
    np.testing.assert_array_equal(crop_to_original(padded, crop), volume)
    assert padded.sum() == pytest.approx(volume.sum(), rel=1e-6)  # zero padding only


def test_content_box_and_cropped_synthesis(model):
    cond = np.zeros((2, 40, 44, 36), np.float32)
    cond[:, 10:20, 12:30, 5:9] = _condition((10, 18, 4))
    box = content_box(cond, margin=2)
    assert box == (slice(8, 22), slice(10, 32), slice(3, 11))
    assert content_box(np.zeros((2, 5, 6, 7)), margin=2) == (slice(0, 5), slice(0, 6), slice(0, 7))
    result = synthesize(model, cond, steps=2, samples=2)
    assert result.mean.shape == (40, 44, 36)
    assert result.info["padded_shape"] == [32, 48, 32]  # the box plus margin, not the whole grid
    outside = np.ones(cond.shape[1:], bool)
    outside[tuple(slice(s.start, s.stop) for s in (slice(2, 28), slice(4, 38), slice(0, 17)))] = False
    assert (result.mean[outside] == 0).all() and (result.std[outside] == 0).all()


def test_odd_volume_round_trips_to_the_input_grid(model):
    cond = _condition((21, 26, 19))
    result = synthesize(model, cond, sampler="ddim", steps=2)
    assert result.mean.shape == (21, 26, 19) and result.mean.dtype == np.float32
    assert result.std is None
    assert np.isfinite(result.mean).all()
    assert 0.0 <= result.mean.min() and result.mean.max() <= 0.3 + 1e-6  # [0, 1] times psr_scale
    assert result.info["padded_shape"] == [32, 32, 32]


@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "ddpm"])
def test_same_seed_same_map_other_seed_other_map(model, sampler):
    cond = _condition((32, 32, 32))
    first = synthesize(model, cond, sampler=sampler, steps=3, seed=7)
    again = synthesize(model, cond, sampler=sampler, steps=3, seed=7)
    other = synthesize(model, cond, sampler=sampler, steps=3, seed=8)
    np.testing.assert_array_equal(first.mean, again.mean)
    assert np.abs(first.mean - other.mean).max() > 1e-4
    assert first.info["sampler"] == sampler and first.info["seed"] == 7


def test_several_samples_give_mean_and_std(model):
    cond = _condition((32, 32, 32))
    progress = []
    result = synthesize(model, cond, steps=2, samples=3, seed=1, progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (6, 6) and len(progress) == 6
    single = synthesize(model, cond, steps=2, samples=1, seed=0)
    assert result.std is not None and result.std.shape == result.mean.shape
    assert (result.std >= 0).all() and result.std.max() > 0
    assert result.info["samples"] == 3
    # chain 0 of a run seeded 1 is not chain 0 of a run seeded 0
    assert chain_seed(1, 0) != chain_seed(0, 1)
    assert np.abs(single.mean - result.mean).max() > 0


def test_one_window_covering_the_volume_equals_whole(model):
    cond = _condition((32, 32, 32))
    whole = synthesize(model, cond, steps=2, window="whole")
    windowed = synthesize(model, cond, steps=2, window=(8, 8, 8))
    assert windowed.info["mode"] == "window"
    np.testing.assert_allclose(windowed.mean, whole.mean, atol=1e-5)


def test_overlapping_windows_agree_with_whole():
    # epsilon, as the test was calibrated: with random weights a v network's output is its clean
    # estimate at high noise, and GroupNorm over a window differs more from the whole volume
    model = build_model(tiny_config("full", psr_scale=0.3, schedule={"prediction_type": "epsilon"}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    cond = _condition((48, 48, 48))
    whole = synthesize(model, cond, steps=2, window="whole")
    windowed = synthesize(model, cond, steps=2, window=(8, 8, 8))
    correlation = np.corrcoef(whole.mean.ravel(), windowed.mean.ravel())[0, 1]
    assert correlation > 0.7
    assert np.abs(whole.mean - windowed.mean).mean() < 0.5 * whole.mean.std()


def test_autoencoders_run_in_training_patch_windows(model):
    """GroupNorm normalizes over the whole input: the autoencoders never see more than a training patch."""
    import torch

    from demist_bids.inference.memory import InferencePlan
    from demist_bids.inference.sampler import VolumeRunner

    patch = tuple(model.config.patch_size)
    f = model.config.autoencoder.downsampling
    whole = VolumeRunner(model, InferencePlan(True, None, 0.0, 0.0), "cpu", bf16=False)
    assert whole.autoencoder_window() == patch
    small = VolumeRunner(model, InferencePlan(False, (8, 8, 8), 0.0, 0.0), "cpu", bf16=False)
    assert small.autoencoder_window() == tuple(min(p, 8 * f) for p in patch)

    one_patch = torch.from_numpy(_condition(patch))[None]
    with torch.no_grad():
        np.testing.assert_allclose(whole.encode(one_patch), model.encode_condition(one_patch), atol=1e-5)
        big = torch.from_numpy(_condition(tuple(2 * p for p in patch)))[None]
        windowed, at_once = whole.encode(big), model.encode_condition(big)
        assert windowed.shape == at_once.shape
        assert not torch.allclose(windowed, at_once, atol=1e-4)  # the whole-input path normalizes differently
        decoded = whole.decode(windowed)
    assert decoded.shape[2:] == big.shape[2:]


def test_batched_windows_give_the_same_map(model):
    """Windows go through the networks several at a time; every normalization is per window."""
    from dataclasses import replace

    import torch

    from demist_bids.inference.sampler import VolumeRunner

    cond = torch.from_numpy(_condition(tuple(2 * p for p in model.config.patch_size)))[None]
    plan = plan_inference(model.config, tuple(cond.shape[2:]), "cpu", sdpa=False, window=(8, 8, 8))
    assert plan.window_batch > 1
    batched = VolumeRunner(model, plan, "cpu", bf16=False)
    single = VolumeRunner(model, replace(plan, window_batch=1), "cpu", bf16=False)
    t = torch.full((1,), 10, dtype=torch.long)
    # Batched and single convolutions take different kernels (oneDNN or not): equal to rounding,
    # where mixing up windows or timesteps would differ by the size of the values.
    with torch.no_grad():
        z_b, z_s = batched.encode(cond), single.encode(cond)
        torch.testing.assert_close(z_b, z_s, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(batched.noise(z_b, t, z_b), single.noise(z_s, t, z_s), atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(batched.decode(z_b), single.decode(z_s), atol=1e-4, rtol=1e-3)


def test_guided_synthesis_names_its_unconditional_branch():
    """Guidance from the adapted backbone gives another map than from the frozen one, and says so."""
    cond = _condition((32, 32, 32))
    maps = {}
    for branch in ("backbone", "adapted"):
        model = build_model(tiny_config(psr_scale=0.3, sampling={"guidance": 1.5, "unconditional": branch}))
        pretend_pretrained(model)
        pretend_trained_streams(model)
        result = synthesize(model, cond, steps=2, seed=3)
        assert result.info["guidance"] == 1.5 and result.info["unconditional"] == branch
        maps[branch] = result.mean
    assert not np.allclose(maps["backbone"], maps["adapted"])
    model.config.sampling.guidance = 1.0
    assert synthesize(model, cond, steps=1).info["unconditional"] is None  # unguided: no branch to name


def test_a_guidance_interval_is_recorded_with_the_map_and_a_bad_one_is_refused_before_sampling():
    cond = _condition((32, 32, 32))
    model = build_model(tiny_config(psr_scale=0.3, sampling={"guidance": 2.0, "guidance_interval": [0, 500]}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    partly = synthesize(model, cond, steps=4, seed=3)
    assert partly.info["guidance_interval"] == [0, 500]
    model.config.sampling.guidance_interval = None
    everywhere = synthesize(model, cond, steps=4, seed=3)
    assert everywhere.info["guidance_interval"] is None and not np.allclose(partly.mean, everywhere.mean)
    model.config.sampling.guidance_interval = [600, 100]
    with pytest.raises(ValueError, match="guidance_interval"):
        synthesize(model, cond, steps=4, seed=3)


def test_noise_scale_divides_every_noise_estimate_and_one_is_the_paper_sampler():
    """Epsilon scaling (SamplingConfig.noise_scale): each guided noise estimate is divided by the scale
    before the scheduler step; 1 leaves the sampler exactly as it was; zero or below is refused."""
    import torch

    from demist_bids.inference.sampler import prepare_volume

    cond = _condition((32, 32, 32))
    model = build_model(tiny_config(psr_scale=0.3, sampling={"guidance": 1.5}))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    plain = synthesize(model, cond, steps=3, seed=5, precision="fp32")
    estimates = {}
    for scale in (1.0, 2.0):
        model.config.sampling.noise_scale = scale
        prepared = prepare_volume(model, cond, "cpu", "fp32")
        runner = prepared.runner
        z_c = runner.encode(prepared.image)
        z_t = torch.randn(z_c.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            estimates[scale] = runner.noise(z_t, torch.full((1,), 700, dtype=torch.long), z_c)
    torch.testing.assert_close(estimates[2.0], estimates[1.0] / 2.0)
    model.config.sampling.noise_scale = 1.0
    same = synthesize(model, cond, steps=3, seed=5, precision="fp32")
    np.testing.assert_array_equal(same.mean, plain.mean)
    assert plain.info["noise_scale"] == 1.0
    model.config.sampling.noise_scale = 1.05
    scaled = synthesize(model, cond, steps=3, seed=5, precision="fp32")
    assert scaled.info["noise_scale"] == 1.05 and not np.allclose(scaled.mean, plain.mean)
    for bad in (0.0, -1.0):
        model.config.sampling.noise_scale = bad
        with pytest.raises(ValueError, match="noise_scale must be positive"):
            synthesize(model, cond, steps=1)


def test_unclamped_maps_keep_the_decoders_values_and_clip_back_to_the_clamped_map(model):
    """``clamp=False`` (a diagnostic of what the clip to the PSR range adds to the level): the decoder's own
    values, which clipped to [0, psr_scale] are the default map to the last digit, sampled or decoded from z_c."""
    from demist_bids.inference.sampler import decode_condition

    cond = _condition((32, 32, 32))
    scale = np.float32(model.config.psr_scale)
    clamped = synthesize(model, cond, steps=2, seed=1, precision="fp32")
    raw = synthesize(model, cond, steps=2, seed=1, precision="fp32", clamp=False)
    assert clamped.info["clamp"] is True and raw.info["clamp"] is False
    assert ((raw.mean < 0) | (raw.mean > scale)).any()  # the tiny model leaves the range somewhere
    np.testing.assert_array_equal(np.clip(raw.mean, 0, scale), clamped.mean)
    decoded = decode_condition(model, cond, precision="fp32", clamp=False)
    assert ((decoded < 0) | (decoded > scale)).any()
    np.testing.assert_array_equal(np.clip(decoded, 0, scale), decode_condition(model, cond, precision="fp32"))


def test_the_estimate_from_the_noised_truth_is_the_truth_at_low_noise_and_z_c_under_a_full_blend(model):
    """``estimate_from_truth``: at t = 0 the noised truth is the truth, so the estimate is the PSR
    autoencoder's own reconstruction up to the network's small correction (far closer than at t = 999);
    under a full blend towards z_c every clean estimate is z_c, so it decodes to no diffusion's map."""
    from demist_bids.inference.sampler import decode_condition, estimate_from_truth, reconstruct_psr
    from demist_bids.models.config import AnchorConfig

    cond = _condition((32, 32, 32))
    psr = (0.2 * cond[0] + 0.01).astype(np.float32)  # the same content box as cond's
    truth = reconstruct_psr(model, psr, precision="fp32")
    near = np.abs(estimate_from_truth(model, cond, psr, 0, precision="fp32") - truth).mean()
    far = np.abs(estimate_from_truth(model, cond, psr, 999, precision="fp32") - truth).mean()
    assert near < 0.25 * far
    model.config.anchor = AnchorConfig(timesteps=[0, 999], weights=[[1.0] * 8, [1.0] * 8])
    try:
        blended = estimate_from_truth(model, cond, psr, 500, precision="fp32")
        unblended = estimate_from_truth(model, cond, psr, 500, precision="fp32", anchor=False)
    finally:
        model.config.anchor = AnchorConfig()
    np.testing.assert_allclose(blended, decode_condition(model, cond, precision="fp32"), atol=1e-4)
    # anchor=False: the network's own estimate, as a chain run with anchor=False sees it
    np.testing.assert_array_equal(unblended, estimate_from_truth(model, cond, psr, 500, precision="fp32"))
    assert np.abs(unblended - blended).max() > 1e-3
    with pytest.raises(ValueError, match="no fitted anchor"):
        estimate_from_truth(model, cond, psr, 500, precision="fp32", anchor=True)


def test_latent_noise_before_decoding_is_seeded_and_zero_is_the_plain_reconstruction(model):
    """``reconstruct_psr(latent_noise=...)``: white noise on the PSR latent before the decoder (how the decoder
    turns a latent error into a map error); 0 is the ae-ceiling map, one seed one map, another seed another."""
    from demist_bids.inference.sampler import reconstruct_psr

    psr = (0.2 * _condition((32, 32, 32))[0] + 0.01).astype(np.float32)
    plain = reconstruct_psr(model, psr, precision="fp32")
    np.testing.assert_array_equal(reconstruct_psr(model, psr, precision="fp32", latent_noise=0.0, seed=4), plain)
    noisy = reconstruct_psr(model, psr, precision="fp32", latent_noise=0.3, seed=4)
    np.testing.assert_array_equal(reconstruct_psr(model, psr, precision="fp32", latent_noise=0.3, seed=4), noisy)
    assert not np.allclose(noisy, plain)
    assert not np.allclose(reconstruct_psr(model, psr, precision="fp32", latent_noise=0.3, seed=5), noisy)
    raw = reconstruct_psr(model, psr, precision="fp32", latent_noise=0.3, seed=4, clamp=False)
    np.testing.assert_array_equal(np.clip(raw, 0, np.float32(model.config.psr_scale)), noisy)


@pytest.mark.parametrize("setting, values, window_kwarg, bad", [
    ("autoencoder_overlap", (0.0, 0.75), "overlap", 1.0),
    ("autoencoder_blend", ("gaussian", "constant"), "mode", "median"),
])
def test_autoencoder_windows_take_their_overlap_and_blend_from_the_model(setting, values, window_kwarg, bad):
    """Each model carries its window overlap and window weights (gaussian or constant): every autoencoder
    pass uses them, the maps differ, an invalid value is refused."""
    from unittest import mock

    import monai.inferers

    cond = _condition((48, 48, 48))
    used, maps = {}, {}
    for value in values:
        model = build_model(tiny_config(psr_scale=0.3, sampling={setting: value}))
        pretend_pretrained(model)
        pretend_trained_streams(model)
        with mock.patch.object(monai.inferers, "sliding_window_inference",
                               wraps=monai.inferers.sliding_window_inference) as spy:
            result = synthesize(model, cond, steps=1, window="whole")
        used[value] = {call.kwargs[window_kwarg] for call in spy.call_args_list}
        maps[value] = result.mean
        assert result.info[setting] == value
    assert used == {value: {value} for value in values}
    assert not np.allclose(maps[values[0]], maps[values[1]])
    with pytest.raises(ValueError, match=setting):
        synthesize(build_model(tiny_config(sampling={setting: bad})), cond, steps=1)


def test_the_decoder_can_take_its_own_window_blend():
    """``decoder_blend``: the decoder's windows take it, the encoder's keep ``autoencoder_blend``; None is
    the encoders' blend (the map to the digit); an invalid value is refused."""
    from unittest import mock

    import monai.inferers

    cond = _condition((48, 48, 48))
    maps = {}
    model = build_model(tiny_config(psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    for decoder in (None, "gaussian", "constant"):
        model.config.sampling.decoder_blend = decoder
        with mock.patch.object(monai.inferers, "sliding_window_inference",
                               wraps=monai.inferers.sliding_window_inference) as spy:
            result = synthesize(model, cond, steps=1, window="whole")
        modes = [call.kwargs["mode"] for call in spy.call_args_list]
        assert modes == ["gaussian", decoder or "gaussian"]  # encode z_c, then decode
        assert result.info["decoder_blend"] == (decoder or "gaussian")
        maps[decoder] = result.mean
    np.testing.assert_array_equal(maps[None], maps["gaussian"])
    assert not np.allclose(maps[None], maps["constant"])
    with pytest.raises(ValueError, match="decoder_blend"):
        synthesize(build_model(tiny_config(sampling={"decoder_blend": "median"})), cond, steps=1)


def test_window_batch_follows_memory():
    config = preset("paper")
    roomy = plan_inference(config, (160, 192, 160), "cpu", sdpa=False, budget_bytes=int(1e12))
    short = plan_inference(config, (160, 192, 160), "cpu", sdpa=False, budget_bytes=int(1e8))
    assert roomy.window_batch == 4 and short.window_batch == 1
    assert plan_inference(config, (160, 192, 160), "cpu", sdpa=False, window="whole", budget_bytes=1).whole


def test_window_is_chosen_when_memory_is_short(model):
    cond = _condition((32, 32, 32))
    result = synthesize(model, cond, steps=1, memory_budget_gb=1e-6)
    assert result.info["mode"] == "window"
    assert synthesize(model, cond, steps=1, memory_budget_gb=100).info["mode"] == "whole"


def test_memory_plan_scales_with_volume():
    config = preset("paper")
    small = estimate_bytes(config, (96, 96, 96), sdpa=False)
    brain = estimate_bytes(config, (160, 192, 160), sdpa=False)
    assert small < brain
    assert 2e9 < brain < 40e9  # the paper networks on a whole brain need gigabytes, not terabytes
    assert plan_inference(config, (160, 192, 160), "cpu", sdpa=False, budget_bytes=int(1e9)).latent_window == (
        24,
        24,
        24,
    )


def test_bad_inputs_are_refused(model):
    with pytest.raises(ValueError):
        synthesize(model, np.zeros((1, 16, 16, 16), np.float32))
    bad = _condition((16, 16, 16))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        synthesize(model, bad)


def test_model_precision_is_the_default_and_bf16_needs_native_support(model, monkeypatch):
    from demist_bids.inference import sampler as sampler_module

    cond = _condition((32, 32, 32))
    assert synthesize(model, cond, steps=2, seed=1).info["dtype"] == "float32"  # auto on CPU
    monkeypatch.setattr(model.config.sampling, "precision", "bf16")
    monkeypatch.setattr(sampler_module, "cpu_has_native_bf16", lambda: True)
    assert synthesize(model, cond, steps=2, seed=1).info["dtype"] == "bfloat16-autocast"
    assert synthesize(model, cond, steps=2, seed=1, precision="fp32").info["dtype"] == "float32"
    monkeypatch.setattr(sampler_module, "cpu_has_native_bf16", lambda: False)
    assert synthesize(model, cond, steps=2, seed=1).info["dtype"] == "float32"  # no slow emulated bf16
    with pytest.raises(ValueError, match="precision"):
        synthesize(model, cond, steps=2, precision="fp16")


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu(model):
    cond = _condition((32, 32, 32))
    cpu = synthesize(model, cond, steps=3, seed=2, device="cpu")
    gpu = synthesize(model, cond, steps=3, seed=2, device="cuda")
    assert gpu.info["dtype"] == "bfloat16-autocast"
    assert np.corrcoef(cpu.mean.ravel(), gpu.mean.ravel())[0, 1] > 0.95
    model.to("cpu")


@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "ddpm"])
def test_steps_below_start_are_exactly_the_steps_asked_for(sampler):
    from demist_bids.inference.sampler import start_schedule

    schedule = preset("small").schedule
    for steps in (1, 2, 3, 5, 10, 50):
        for start in (0.05, 0.15, 0.5):
            _, timesteps = start_schedule(sampler, schedule, steps, start)
            assert len(timesteps) == steps, (steps, start)
            assert all(t < start * schedule.num_train_timesteps for t in timesteps)
            assert timesteps == sorted(timesteps, reverse=True)
    # the reference: every training timestep below the start
    assert start_schedule(sampler, schedule, 1000, 0.15)[1] == list(range(149, -1, -1))
    assert len(start_schedule(sampler, schedule, 10, 1.0)[1]) == 10


def test_start_below_one_refines_the_aligned_condition_latent(model):
    cond = _condition((32, 32, 32))
    full = synthesize(model, cond, sampler="ddim", steps=4, seed=3)
    assert full.info["start"] == 1.0 and full.info["steps"] == 4
    again = synthesize(model, cond, sampler="ddim", steps=4, seed=3, start=1.0)
    np.testing.assert_array_equal(full.mean, again.mean)  # start=1 is the paper's sampler
    late = synthesize(model, cond, sampler="dpm++", steps=4, seed=3, start=0.4)
    assert late.info["start"] == 0.4 and late.info["steps"] == 4
    assert not np.array_equal(late.mean, full.mean)
    # starting at a low noise level keeps the result near the decoded conditioning latent
    import torch

    with torch.no_grad():
        from demist_bids.inference.grid import pad_to_multiple

        padded, crop = pad_to_multiple(cond, model.config.size_multiple)
        z_c = model.encode_condition(torch.from_numpy(padded)[None])
        prior = model.decode_psr(z_c).clamp(0, 1)[0, 0].numpy() * model.config.psr_scale
    prior = crop_to_original(prior, crop)
    barely = synthesize(model, cond, sampler="ddim", steps=2, seed=3, start=0.02,
                        crop_to_content=False)
    assert np.abs(barely.mean - prior).mean() < np.abs(full.mean - prior).mean()
    with pytest.raises(ValueError, match="start"):
        synthesize(model, cond, steps=2, start=0.0)
