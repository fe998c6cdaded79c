"""v-prediction networks and per-channel latent standardization."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from demist_bids.models.autoencoders import latent_channel_statistics, posterior_mean
from demist_bids.models.demist import build_model
from tests.models.tiny import pretend_pretrained, tiny_config


def test_v_target_converts_back_to_the_noise():
    model = build_model(tiny_config("full"))
    assert model.predicts_velocity  # the small preset (and tiny) trains its own backbone as v
    generator = torch.Generator().manual_seed(0)
    z0, noise = torch.randn((3, 8, 4, 4, 4), generator=generator), torch.randn((3, 8, 4, 4, 4), generator=generator)
    t = torch.tensor([0, 500, 999])
    abar = model.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
    v = model.training_target(z0, noise, t)
    torch.testing.assert_close(model.to_noise(v, z_t, t), noise, atol=1e-5, rtol=1e-5)


def test_epsilon_network_is_unchanged():
    config = tiny_config("full")
    config.schedule = dataclasses.replace(config.schedule, prediction_type="epsilon")
    model = build_model(config)
    pretend_pretrained(model)
    z = torch.randn((2, 8, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 900])
    torch.testing.assert_close(model.predict_noise(z, t, z), model.network_output(z, t, z))
    assert model.training_target(z, z + 1, t) is not z and torch.equal(model.training_target(z, z + 1, t), z + 1)


def test_channel_standardization_gives_unit_channels_and_decodes_the_same_map():
    model = build_model(tiny_config("full"))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in model.psr_autoencoder.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    patches = [torch.rand((2, 1, 32, 32, 32), generator=generator) for _ in range(3)]
    shift, scale = latent_channel_statistics(model.psr_autoencoder, patches)
    model.config.latent_shift, model.config.latent_channel_scale = shift, scale
    with torch.no_grad():
        z = torch.cat([model.encode_psr(p) for p in patches])
        torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros(8), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.std(dim=(0, 2, 3, 4), correction=0), torch.ones(8), atol=1e-3, rtol=0)
        raw = posterior_mean(model.psr_autoencoder, patches[0])
        torch.testing.assert_close(model.decode_psr(model.encode_psr(patches[0])),
                                   model.psr_autoencoder.decode(raw), atol=1e-5, rtol=1e-5)
        # the conditioning latent is standardized with the PSR latent's statistics
        cond = torch.rand((1, 2, 32, 32, 32), generator=generator)
        expected = (posterior_mean(model.cond_autoencoder, cond) - torch.tensor(shift).view(1, -1, 1, 1, 1)) \
            * torch.tensor(scale).view(1, -1, 1, 1, 1)
        torch.testing.assert_close(model.encode_condition(cond), expected, atol=1e-5, rtol=1e-5)


def test_without_streams_is_the_backbone_alone():
    from tests.models.tiny import pretend_trained_streams

    model = build_model(tiny_config("full"))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    bare = model.without_streams()
    z = torch.randn((1, 8, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    t = torch.tensor([400])
    with torch.no_grad():
        assert not torch.allclose(model.predict_noise(z, t, z), model.backbone_noise(z, t))
        torch.testing.assert_close(bare.predict_noise(z, t, z), model.backbone_noise(z, t))
    assert bare.controlnet is None and bare.semantic is None


def test_gate_parameters_are_the_zero_initialised_joins():
    model = build_model(tiny_config("full"))
    gates = model.gate_parameters()
    trainable = {id(p) for p in model.trainable_stream_parameters()}
    assert gates and all(id(p) in trainable for p in gates)
    assert all(torch.count_nonzero(p) == 0 for p in gates)  # every stream starts at exactly zero
    ablated = build_model(tiny_config("ft-ldm"))  # semantic stream only: its output projections
    assert len(ablated.gate_parameters()) == 2 * len(ablated.semantic.cross_attentions)


def test_cosine_rate_scales_each_group():
    from demist_bids.training.stages import cosine_learning_rate

    weight = torch.nn.Parameter(torch.zeros(1))
    gate = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [weight]}, {"params": [gate], "lr_scale": 10.0}], lr=1.0)
    cosine_learning_rate([optimizer], 1e-3, 0, 100)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-2])
    cosine_learning_rate([optimizer], 1e-3, 100, 100)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-5, 5e-4])


def test_hint_layers_keep_the_zero_start_and_train():
    from tests.models.tiny import pretend_trained_streams

    model = build_model(tiny_config("full", streams={"hint_layers": 2}))
    pretend_pretrained(model)
    hint = model.controlnet.controlnet_cond_embedding
    assert len(hint.hidden) == 4  # two 3x3x3 convolutions with their activations
    z = torch.randn((1, 8, 4, 4, 4), generator=torch.Generator().manual_seed(4))
    t = torch.tensor([600])
    with torch.no_grad():
        torch.testing.assert_close(model.predict_noise(z, t, z), model.backbone_noise(z, t))  # still the backbone
    gates = {id(p) for p in model.gate_parameters()}
    assert all(id(p) not in gates for p in hint.hidden.parameters())  # hidden layers are not gates
    assert all(p.requires_grad for p in hint.hidden.parameters())
    pretend_trained_streams(model)
    with torch.no_grad():
        assert not torch.allclose(model.predict_noise(z, t, z), model.predict_noise(z, t, z.flip(2)))
