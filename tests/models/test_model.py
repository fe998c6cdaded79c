"""The DEMIST model: zero-init equivalence, frozen backbone, ablations, training-stage API."""

from __future__ import annotations

import copy

import pytest
import torch

from demist_bids.models.config import ABLATIONS
from demist_bids.models.demist import build_model
from demist_bids.models.unet import plain_state_dict
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

LATENT = (1, 8, 8, 8, 8)


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    z_t = torch.randn(LATENT, generator=generator)
    z_c = torch.randn(LATENT, generator=generator)
    return z_t, torch.tensor([417]), z_c


@pytest.fixture(scope="module")
def full_model():
    model = build_model(tiny_config("full"))
    pretend_pretrained(model)
    return model


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_zero_init_equals_frozen_backbone(ablation):
    model = build_model(tiny_config(ablation))
    pretend_pretrained(model)
    z_t, t, z_c = _inputs()
    with torch.no_grad():
        conditional = model.predict_noise(z_t, t, z_c)
        backbone = model.backbone_noise(z_t, t)
    assert conditional.shape == LATENT
    assert backbone.abs().mean() > 1e-3  # a non-trivial backbone, so the check means something
    assert (conditional - backbone).abs().max().item() < 1e-6


def test_streams_change_the_prediction_once_trained(full_model):
    model = copy.deepcopy(full_model)
    pretend_trained_streams(model)
    z_t, t, z_c = _inputs()
    with torch.no_grad():
        base = model.backbone_noise(z_t, t)
        first = model.predict_noise(z_t, t, z_c)
        other_condition = model.predict_noise(z_t, t, torch.randn(LATENT))
    assert (first - base).abs().max() > 1e-4
    assert (first - other_condition).abs().max() > 1e-4  # the condition is actually used
    # backbone_noise switches LoRA off: it equals the untouched original's prediction
    with torch.no_grad():
        torch.testing.assert_close(base, full_model.backbone_noise(z_t, t))


@pytest.mark.parametrize("ablation", ["full", "controlnet"])
def test_guidance_extrapolates_from_the_branch_the_config_names(full_model, ablation):
    """``adapted``: the backbone with its LoRA and no condition, so only the condition's effect is scaled."""
    model = copy.deepcopy(full_model) if ablation == "full" else build_model(tiny_config(ablation))
    if ablation != "full":
        pretend_pretrained(model)
    pretend_trained_streams(model)
    z_t, t, z_c = _inputs()
    try:
        with torch.no_grad():
            cond, frozen, adapted = (model.predict_noise(z_t, t, z_c), model.backbone_noise(z_t, t),
                                     model.adapted_noise(z_t, t))
            model.config.sampling.unconditional = "adapted"
            torch.testing.assert_close(model.guided_noise(z_t, t, z_c, 1.5), adapted + 1.5 * (cond - adapted))
            torch.testing.assert_close(model.guided_noise(z_t, t, z_c, 1.0), cond)
            model.config.sampling.unconditional = "backbone"
            torch.testing.assert_close(model.guided_noise(z_t, t, z_c, 1.5), frozen + 1.5 * (cond - frozen))
        # with adapters the two branches differ, and the adapted one is not the conditional model either
        differs = (adapted - frozen).abs().max().item() > 1e-4
        assert differs == (ablation == "full")
        assert (cond - adapted).abs().max().item() > 1e-4
    finally:
        model.config.sampling.unconditional = "backbone"


def test_a_guidance_interval_guides_only_the_timesteps_inside_it(full_model):
    """``sampling.guidance_interval = [lo, hi]``: guided at lo <= t < hi, the model alone elsewhere, per sample."""
    model = copy.deepcopy(full_model)
    pretend_trained_streams(model)
    z_t, _, z_c = _inputs()
    batch = torch.cat([z_t, z_t]), torch.tensor([100, 700]), torch.cat([z_c, z_c])
    with torch.no_grad():
        cond, frozen = model.predict_noise(*batch), model.backbone_noise(*batch[:2])
        everywhere = frozen + 2.0 * (cond - frozen)
        model.config.sampling.guidance_interval = [0, 500]
        low = model.guided_noise(*batch, 2.0)
        model.config.sampling.guidance_interval = [500, 1000]
        high = model.guided_noise(*batch, 2.0)
        model.config.sampling.guidance_interval = [800, 1000]
        neither = model.guided_noise(*batch, 2.0)
    torch.testing.assert_close(low, torch.stack([everywhere[0], cond[1]]))
    torch.testing.assert_close(high, torch.stack([cond[0], everywhere[1]]))
    torch.testing.assert_close(neither, cond)
    assert (everywhere - cond).abs().max() > 1e-4  # guidance does change the estimate, so the checks mean something
    model.config.sampling.guidance_interval = [500, 500]
    with pytest.raises(ValueError, match="guidance_interval"):
        model.guided_noise(*batch, 2.0)


def test_only_stream_parameters_are_trainable(full_model):
    trainable = {id(p) for p in full_model.parameters() if p.requires_grad}
    streams = {id(p) for p in full_model.trainable_stream_parameters()}
    assert trainable == streams
    total = sum(p.numel() for p in full_model.parameters())
    assert 0 < sum(p.numel() for p in full_model.trainable_stream_parameters()) < total / 2


def test_frozen_parameters_bit_identical_after_optimizer_step(full_model):
    model = copy.deepcopy(full_model).train()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    streams_before = [p.detach().clone() for p in model.trainable_stream_parameters()]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    z_t, t, z_c = _inputs()
    for _ in range(2):  # the second step reaches parameters behind the zero layers
        optimizer.zero_grad()
        loss = (model.predict_noise(z_t, t, z_c) - torch.randn(LATENT)).pow(2).mean()
        loss.backward()
        optimizer.step()
    for name, param in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), name
    changed = sum(not torch.equal(a, b) for a, b in zip(streams_before, model.trainable_stream_parameters()))
    assert changed > len(streams_before) // 2


@pytest.mark.parametrize("ablation", ["ft-ldm", "controlnet", "lora", "full"])
def test_each_ablation_builds_and_trains(ablation):
    model = build_model(tiny_config(ablation)).train()
    config = model.config.streams
    assert (model.controlnet is not None) == config.spatial
    assert (model.semantic is not None) == config.semantic
    has_lora = any("lora_" in n for n, _ in model.backbone.named_parameters())
    assert has_lora == config.adaptive
    z_t, t, z_c = _inputs()
    loss = model.predict_noise(z_t, t, z_c).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in model.backbone_parameters())


def test_trainable_counts_grow_with_streams():
    counts = {
        name: sum(p.numel() for p in build_model(tiny_config(name)).trainable_stream_parameters())
        for name in ("ft-ldm", "lora", "controlnet", "full")
    }
    assert counts["ft-ldm"] < counts["lora"] < counts["full"]
    assert counts["ft-ldm"] < counts["controlnet"] < counts["full"]


def test_backbone_stage_unfreeze_then_freeze():
    model = build_model(tiny_config("full"))
    model.unfreeze_backbone()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.backbone_parameters()}
    z_t, t, _ = _inputs()
    model.backbone_noise(z_t, t).pow(2).mean().backward()
    assert all(p.grad is not None for p in model.backbone.out.parameters())
    model.freeze_backbone()
    model.sync_controlnet_from_backbone()
    assert {id(p) for p in model.parameters() if p.requires_grad} == {
        id(p) for p in model.trainable_stream_parameters()
    }
    backbone = plain_state_dict(model.backbone)
    for name, param in model.controlnet.down_blocks.named_parameters():
        assert torch.equal(param, backbone["down_blocks." + name]), name


def test_autoencoders_shapes_and_scales(full_model):
    model = copy.deepcopy(full_model)
    model.config.psr_latent_scale = 2.0
    image = torch.rand(1, 1, 32, 32, 32)
    z = model.encode_psr(image)
    assert z.shape == (1, 8, 8, 8, 8)
    with torch.no_grad():
        unscaled, _ = model.psr_autoencoder.encode(image)
        torch.testing.assert_close(z, unscaled * 2.0)
        assert model.decode_psr(z).shape == (1, 1, 32, 32, 32)
    assert model.encode_condition(torch.rand(1, 2, 32, 32, 32)).shape == (1, 8, 8, 8, 8)


def test_deepcopy_rebinds_semantic_hooks(full_model):
    twin = copy.deepcopy(full_model)
    pretend_trained_streams(twin)
    z_t, t, z_c = _inputs()
    with torch.no_grad():
        assert (full_model.predict_noise(z_t, t, z_c) - full_model.backbone_noise(z_t, t)).abs().max() < 1e-6
        assert (twin.predict_noise(z_t, t, z_c) - twin.backbone_noise(z_t, t)).abs().max() > 1e-4


def test_sdpa_matches_einsum_attention(full_model):
    model = copy.deepcopy(full_model)
    pretend_trained_streams(model)
    z_t, t, z_c = _inputs()
    with torch.no_grad():
        reference = model.predict_noise(z_t, t, z_c)
        model.use_sdpa(True)
        fast = model.predict_noise(z_t, t, z_c)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)
