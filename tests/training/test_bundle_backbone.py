"""``train --backbone B --backbone-autoencoder A`` with genuine old-format (MONAI GenerativeModels) weights.

REFERENCE §2: the BraTS bundle's files are in the old key format; monai-generative 0.2.3
(installed with --no-deps by .ci/run) writes genuine ones. Here they have the small preset's
sizes so that a train run stays small: the frozen prior must be exactly the given UNet, both
autoencoders must start from the given autoencoder, and the model must predict epsilon with
one latent scale factor, as the bundle does.
"""

import pytest
import torch

from tests.training.test_pipeline import _config

pytestmark = pytest.mark.slow


def test_train_freezes_the_given_backbone_on_its_own_autoencoder(tmp_path):
    nets = pytest.importorskip("generative.networks.nets")
    from demist_bids.models.config import preset
    from demist_bids.models.io import load_model
    from demist_bids.models.unet import build_backbone, plain_state_dict
    from demist_bids.phantom.cohort import generate_cohort
    from demist_bids.training import run_train

    small = preset("small")
    ae, unet = small.autoencoder, small.unet
    torch.manual_seed(0)
    old_ae = nets.AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, num_channels=tuple(ae.channels),
        num_res_blocks=ae.num_res_blocks, attention_levels=(False,) * len(ae.channels),
        latent_channels=ae.latent_channels, norm_num_groups=ae.norm_num_groups,
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    )
    old_unet = nets.DiffusionModelUNet(
        spatial_dims=3, in_channels=ae.latent_channels, out_channels=ae.latent_channels,
        num_channels=tuple(unet.channels), attention_levels=tuple(unet.attention_levels),
        num_head_channels=tuple(unet.num_head_channels), num_res_blocks=unet.num_res_blocks,
        norm_num_groups=unet.norm_num_groups,
    )
    with torch.no_grad():
        for param in old_unet.parameters():
            param.normal_(0, 0.05)
    torch.save(old_ae.state_dict(), tmp_path / "ae.pt")
    torch.save(old_unet.state_dict(), tmp_path / "unet.pt")

    generate_cohort(tmp_path / "bids", subjects=2, seed=5, scale=0.3, control_fraction=0.0)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("patch_size = [16, 16, 16]\nbatch_size = 1\neval_steps = 2\nscale_factor_batches = 2\n")
    config = _config(tmp_path, recipe, folds=1, backbone=tmp_path / "unet.pt",
                     backbone_autoencoder=tmp_path / "ae.pt")
    assert run_train(config) == 0

    model = load_model(tmp_path / "out" / "model")
    assert model.config.schedule.prediction_type == "epsilon"  # the bundle's parametrization
    assert model.config.latent_channel_scale == []  # one scale factor per latent, as the bundle
    z = torch.randn(1, ae.latent_channels, 8, 8, 8)
    with torch.no_grad():  # the frozen prior is the given UNet, exactly
        torch.testing.assert_close(model.backbone_noise(z, torch.tensor([10])), old_unet(z, torch.tensor([10])))
    reference = build_backbone(unet, ae.latent_channels)
    reference.load_old_state_dict(old_unet.state_dict())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in plain_state_dict(model.backbone).items())
    # both autoencoders started from the given one (one ae step of fine-tuning since)
    image = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        start = old_ae.encode(image)[0]
        after = model.psr_autoencoder.encode(image)[0]
    assert torch.nn.functional.cosine_similarity(after.flatten(), start.flatten(), dim=0) > 0.9
    assert "fine-tuned from" in model.config.card["autoencoders"]
