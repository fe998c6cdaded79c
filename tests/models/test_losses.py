"""Training losses: Sobel edges, predicted clean latent, KL and adversarial terms."""

from __future__ import annotations

import pytest
import torch

from demist_bids.inference.schedulers import training_scheduler
from demist_bids.models.config import ScheduleConfig
from demist_bids.training import losses


def test_sobel_of_a_ramp_is_its_slope():
    h = torch.arange(10.0)[:, None, None].expand(10, 8, 6)
    image = (2.0 * h + 0.5 * torch.arange(6.0))[None, None]
    grads = losses.sobel_gradients(image)
    assert grads.shape == (1, 3, 10, 8, 6)
    inner = grads[..., 1:-1, 1:-1, 1:-1]
    torch.testing.assert_close(inner[:, 0], torch.full_like(inner[:, 0], 2.0))
    torch.testing.assert_close(inner[:, 1], torch.zeros_like(inner[:, 1]))
    torch.testing.assert_close(inner[:, 2], torch.full_like(inner[:, 2], 0.5))


def test_edge_loss_sees_edges_not_offsets():
    image = torch.rand(2, 1, 12, 12, 12)
    assert losses.edge_loss(image + 0.3, image) < 1e-6
    blurred = torch.nn.functional.avg_pool3d(image, 3, stride=1, padding=1)
    assert losses.edge_loss(blurred, image) > 0.01
    assert losses.edge_loss(torch.rand(1, 2, 8, 8, 8), torch.rand(1, 2, 8, 8, 8)) > 0


def test_predicted_clean_latent_inverts_add_noise():
    scheduler = training_scheduler(ScheduleConfig())
    z0 = torch.randn(3, 8, 4, 4, 4)
    noise = torch.randn_like(z0)
    t = torch.tensor([0, 500, 999])
    z_t = scheduler.add_noise(z0, noise, t)
    recovered = losses.predicted_clean_latent(z_t, noise, t, scheduler.alphas_cumprod)
    torch.testing.assert_close(recovered, z0, atol=2e-3, rtol=1e-3)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    mu, sigma = torch.zeros(2, 8, 3, 3, 3), torch.ones(2, 8, 3, 3, 3)
    assert losses.kl_loss(mu, sigma).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.kl_loss(mu + 1.0, sigma).item() == pytest.approx(0.5 * 8 * 27)


def test_noise_and_alignment_losses():
    a = torch.zeros(2, 8, 2, 2, 2)
    assert losses.noise_loss(a + 2.0, a).item() == pytest.approx(4.0)
    assert losses.alignment_loss(a, a).item() == 0.0


def test_adversarial_losses_push_the_right_way():
    real, fake = torch.ones(2, 1, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4)
    assert losses.discriminator_loss(real, fake).item() == pytest.approx(0.0)
    assert losses.discriminator_loss(fake, real).item() > 0.5
    assert losses.generator_adversarial_loss(real).item() == pytest.approx(0.0)
    assert losses.generator_adversarial_loss(fake).item() > 0.5


def test_autoencoder_loss_combines_its_parts():
    target = torch.rand(1, 1, 8, 8, 8)
    recon = target + 0.1 * torch.randn_like(target)
    mu, sigma = torch.randn(1, 8, 2, 2, 2), torch.rand(1, 8, 2, 2, 2) + 0.5
    parts = losses.autoencoder_loss(
        recon, target, mu, sigma, kl_weight=1e-6, edge_weight=0.5, adversarial_weight=0.1,
        fake_logits=torch.zeros(1, 1, 2, 2, 2),
    )
    expected = parts["l1"] + 1e-6 * parts["kl"] + 0.5 * parts["edge"] + 0.1 * parts["adv"]
    torch.testing.assert_close(parts["total"], expected)


def test_lesion_l1_is_the_mean_error_over_lesion_voxels_only():
    truth = torch.zeros(2, 1, 4, 4, 4)
    decoded = torch.full((2, 1, 4, 4, 4), 0.5)  # 0.5 off everywhere ...
    lesion = torch.zeros_like(truth)
    lesion[0, 0, 1, 1, 1] = lesion[1, 0, 2, 2, 2] = 1
    decoded[0, 0, 1, 1, 1], decoded[1, 0, 2, 2, 2] = 0.1, 0.3  # ... but 0.1 and 0.3 on the two lesion voxels
    assert float(losses.lesion_l1_loss(decoded, truth, lesion)) == pytest.approx(0.2)
    # no lesion in the batch: zero, and still a graph to back-propagate through (DDP ranks all reduce)
    decoded.requires_grad_(True)
    none = losses.lesion_l1_loss(decoded, truth, torch.zeros_like(truth))
    none.backward()
    assert none.item() == 0.0 and decoded.grad is not None and float(decoded.grad.abs().sum()) == 0.0


def test_weighted_decoded_l1_weighs_each_patch_and_equals_the_plain_mean_at_a_constant_weight():
    decoded, truth = torch.rand(3, 1, 6, 6, 6), torch.rand(3, 1, 6, 6, 6)
    plain = losses.decoded_alignment_loss(decoded, truth)
    torch.testing.assert_close(losses.decoded_alignment_loss(decoded, truth, torch.full((3,), 2.0)), 2.0 * plain)
    # all the weight on the second patch: its own mean error, a third of it over the batch of three
    only_second = losses.decoded_alignment_loss(decoded, truth, torch.tensor([0.0, 3.0, 0.0]))
    torch.testing.assert_close(only_second, (decoded[1] - truth[1]).abs().mean())


def test_the_timestep_ramp_runs_from_its_base_at_t0_to_base_plus_extra_at_the_noisiest_step():
    weights = losses.timestep_ramp(torch.tensor([0, 500, 999]), 1000, 1.0, 3.0)
    torch.testing.assert_close(weights, torch.tensor([1.0, 1.0 + 3.0 * 500 / 999, 4.0]))
