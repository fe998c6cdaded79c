"""The semantic stream's two token layouts: the paper's fixed grid and the local one that can say where."""

from __future__ import annotations

import copy

import pytest
import torch

from demist_bids.models.demist import build_model
from demist_bids.models.semantic import SemanticStream, local_neighbourhood
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

STREAMS = {"token_dim": 12, "token_grid": [2, 2, 2], "cross_attention_heads": 2, "lora_rank": 2}


def _local_model(ablation: str = "ft-ldm", stride: int = 2):
    model = build_model(tiny_config(ablation, streams={**STREAMS, "token_stride": stride}))
    pretend_pretrained(model)
    return model


def test_neighbourhood_geometry_where_a_level_matches_the_token_grid():
    index, valid, distance2 = local_neighbourhood((4, 4, 4), (8, 8, 8), (4, 4, 4), 2, torch.device("cpu"))
    assert index.shape == valid.shape == distance2.shape == (64, 27)
    centre = 13  # offset (0, 0, 0) of the 27
    torch.testing.assert_close(index[:, centre], torch.arange(64))  # each query's own token ...
    assert distance2[:, centre].abs().max() == 0  # ... sits where it does
    assert valid[0].sum() == 8 and valid[21].sum() == 27  # a corner query has 2^3 neighbours, an inner one 3^3
    assert distance2[valid].max() == 3  # the farthest neighbour is one stride away along each axis


def test_neighbourhood_of_a_finer_level_reads_the_tokens_around_it():
    # a level twice as fine as the tokens: query 1 along an axis sits at 1.5 latent voxels, inside token 0
    index, valid, distance2 = local_neighbourhood((8, 1, 1), (8, 1, 1), (4, 1, 1), 2, torch.device("cpu"))
    own = index[1][valid[1] & (distance2[1] < 0.1)]
    assert own.tolist() == [0]
    assert sorted(index[1][valid[1]].unique().tolist()) == [0, 1]


def test_local_attention_equals_full_attention_with_the_distance_bias():
    model = _local_model()
    pretend_trained_streams(model)
    stream: SemanticStream = model.semantic
    adapter = stream.cross_attentions[0]
    z_c = torch.randn(2, 8, 8, 6, 8)
    features = torch.randn(2, adapter.norm.num_channels, 4, 3, 4)
    with torch.no_grad(), stream.conditioned(z_c):
        tokens = stream.slot.tokens
        local = adapter(features, tokens)
        # the same attention over every token, with the bias inside each query's 3x3x3 and -inf outside
        block = adapter.attention
        queries = adapter.norm(features).reshape(2, features.shape[1], -1).transpose(1, 2)
        index, valid, distance2 = local_neighbourhood((4, 3, 4), (8, 6, 8), stream.slot.token_shape, 2,
                                                      torch.device("cpu"))
        heads = adapter.num_heads
        q = block.to_q(queries).reshape(2, 48, heads, -1)
        k = block.to_k(tokens).reshape(2, tokens.shape[1], heads, -1)
        v = block.to_v(tokens).reshape(2, tokens.shape[1], heads, -1)
        scores = torch.einsum("bqhd,bkhd->bqhk", q, k) * block.scale
        bias = torch.full((48, heads, tokens.shape[1]), float("-inf"))
        sharpness = adapter.log_sharpness.exp()
        for query in range(48):
            for n in range(27):
                if valid[query, n]:
                    bias[query, :, index[query, n]] = -sharpness * distance2[query, n]
        out = torch.einsum("bqhk,bkhd->bqhd", (scores + bias).softmax(-1), v).reshape(2, 48, -1)
        full = block.out_proj(out).transpose(1, 2).reshape(features.shape)
        assert list(stream.slot.neighbourhoods) == [(4, 3, 4, 2)]  # computed once for the level, kept for the pass
    assert stream.slot.neighbourhoods == {}  # and not carried into the next pass, whose latent may differ
    torch.testing.assert_close(local, full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("stride, far_changes", [(2, False), (0, True)])
def test_only_the_local_layout_keeps_a_change_of_the_condition_where_it_is(stride, far_changes):
    model = _local_model(stride=stride)
    pretend_trained_streams(model)
    stream: SemanticStream = model.semantic
    adapter = stream.cross_attentions[0]
    features = torch.randn(1, adapter.norm.num_channels, 4, 4, 4)
    z_c = torch.randn(1, 8, 8, 8, 8)
    changed = z_c.clone()
    changed[..., :2, :2, :2] += 3.0  # one corner token's region
    with torch.no_grad():
        with stream.conditioned(z_c):
            before = adapter(features, stream.slot.tokens)
        with stream.conditioned(changed):
            after = adapter(features, stream.slot.tokens)
    difference = (after - before).abs()
    assert difference[..., 0, 0, 0].max() > 1e-3  # the corner itself hears it in both layouts
    far = difference[..., 2:, 2:, 2:].max().item()  # two strides away and more
    assert (far > 1e-3) == far_changes


def test_a_token_means_the_same_region_in_a_patch_and_in_a_whole_latent():
    model = _local_model()
    pretend_trained_streams(model)
    tokenizer = model.semantic.tokenizer
    whole = torch.randn(1, 8, 12, 8, 10)
    patch = whole[..., 4:12, 0:4, 2:10]  # aligned to the stride
    with torch.no_grad():
        whole_grid, patch_grid = tokenizer.token_grid(whole), tokenizer.token_grid(patch)
    assert whole_grid.shape[2:] == (6, 4, 5) and patch_grid.shape[2:] == (4, 2, 4)
    torch.testing.assert_close(patch_grid, whole_grid[..., 2:6, 0:2, 1:5])


def test_partial_and_undersized_latents_pool_to_the_mean_of_what_their_windows_hold():
    model = _local_model(stride=4)
    tokenizer = model.semantic.tokenizer
    z_c = torch.randn(1, 8, 6, 3, 4)  # 6 = one whole window and a half one; 3 < the stride
    with torch.no_grad():
        grid = tokenizer.token_grid(z_c)
        projected = tokenizer.project(z_c)
    assert grid.shape[2:] == (2, 1, 1)
    torch.testing.assert_close(grid[..., 0, 0, 0], projected[..., :4, :, :].mean((2, 3, 4)))
    torch.testing.assert_close(grid[..., 1, 0, 0], projected[..., 4:, :, :].mean((2, 3, 4)))


@pytest.mark.parametrize("ablation", ["ft-ldm", "full"])
def test_local_layout_starts_at_the_backbone_and_trains(ablation):
    model = _local_model(ablation)
    generator = torch.Generator().manual_seed(0)
    z_t, z_c = torch.randn(2, 8, 8, 12, 8, generator=generator), torch.randn(2, 8, 8, 12, 8, generator=generator)
    t = torch.tensor([700, 30])
    with torch.no_grad():
        assert (model.predict_noise(z_t, t, z_c) - model.backbone_noise(z_t, t)).abs().max() < 1e-6
    trained = copy.deepcopy(model)
    pretend_trained_streams(trained)
    trained.predict_noise(z_t, t, z_c).square().mean().backward()
    sharpness = [p for name, p in trained.semantic.named_parameters() if name.endswith("log_sharpness")]
    assert sharpness and all(p.grad is not None and p.grad.abs().sum() > 0 for p in sharpness)
    assert all(p.requires_grad for p in sharpness) and set(map(id, sharpness)) <= set(
        map(id, trained.trainable_stream_parameters()))
