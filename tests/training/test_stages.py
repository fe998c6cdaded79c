"""Each stage updates exactly what it should: AEs, then E_cond only, then the backbone, then streams only."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from demist_bids.models.config import preset
from demist_bids.models.demist import build_model
from demist_bids.training import stages as st
from demist_bids.training.checkpoints import TerminationFlag, TrainingInterrupted
from demist_bids.training.distributed import DistributedContext
from demist_bids.training.patches import PatchSampler
from demist_bids.training.recipes import recipe
from demist_bids.training.volumes import TrainingVolume
from demist_bids.training.weight_average import WeightAverage
from tests.models.tiny import pretend_pretrained


def _blob_volume(name, seed, shape=(24, 24, 24)):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    brain = radius < 0.9
    wm = radius < 0.5 + 0.05 * rng.random()
    psr = np.where(wm, 0.18, np.where(brain, 0.07, 0)).astype(np.float32)
    t1w = np.where(wm, 0.9, np.where(brain, 0.6, 0)) + 0.02 * rng.standard_normal(shape)
    flair = np.where(wm, 0.5, np.where(brain, 0.7, 0)) + 0.02 * rng.standard_normal(shape)
    cond = (np.stack([t1w, flair]) * brain).astype(np.float32)
    return TrainingVolume(name, cond, psr, brain)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _log_row(directory, index=1):
    """One row of a stage's ``log.csv`` as ``{column: text}`` (row 1: the first step)."""
    lines = (Path(directory) / "log.csv").read_text().splitlines()
    return dict(zip(lines[0].split(","), lines[index].split(",")))


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    torch.manual_seed(0)
    volumes = [_blob_volume("a", 0), _blob_volume("b", 1)]
    rec = recipe("small")
    rec.patch_size = [16, 16, 16]
    rec.batch_size = 1
    rec.adversarial_start = 0.0
    rec.edge_timestep_max = 1000  # exercise the decoded edge term on every step
    sampler = PatchSampler(volumes, rec.patch_size, 0.2, seed=0)
    model = build_model(preset("small", ablation="full", psr_scale=0.2))
    root = tmp_path_factory.mktemp("stages")

    def run(name, steps=2):
        return st.StageRun(sampler, rec, Path(root) / name, steps, DistributedContext(),
                           TerminationFlag(), False, 0, torch.device("cpu"))

    return model, run


def test_stages_update_only_their_parameters(setting):
    model, run = setting
    before = {n: _snapshot(getattr(model, n)) for n in ("psr_autoencoder", "cond_autoencoder", "backbone")}
    st.train_autoencoders(model, run("ae"))
    after_ae = {n: _snapshot(getattr(model, n)) for n in before}
    assert not _same(before["psr_autoencoder"], after_ae["psr_autoencoder"])
    assert not _same(before["cond_autoencoder"], after_ae["cond_autoencoder"])
    assert _same(before["backbone"], after_ae["backbone"])

    scales = st.align_condition_encoder(model, run("align"))
    after_align = {n: _snapshot(getattr(model, n)) for n in before}
    assert _same(after_ae["psr_autoencoder"], after_align["psr_autoencoder"])
    changed = [k for k in after_ae["cond_autoencoder"]
               if not torch.equal(after_ae["cond_autoencoder"][k], after_align["cond_autoencoder"][k])]
    assert changed and all(k.startswith(("encoder.", "quant_conv_mu", "quant_conv_log_sigma")) for k in changed)
    assert scales["psr_latent_scale"] > 0 and model.config.psr_latent_scale == scales["psr_latent_scale"]

    st.train_backbone(model, run("backbone"))
    after_backbone = {n: _snapshot(getattr(model, n)) for n in before}
    assert not _same(after_align["backbone"], after_backbone["backbone"])
    assert not any(p.requires_grad for p in model.backbone_parameters())

    streams_before = [p.detach().clone() for p in model.trainable_stream_parameters()]
    st.train_streams(model, run("diffusion"))
    after = {n: _snapshot(getattr(model, n)) for n in before}
    for name in before:  # backbone and both autoencoders stay bit-identical (LoRA keys excluded)
        frozen = {k: v for k, v in after_backbone[name].items() if "lora_" not in k and "out_proj" not in k}
        assert _same(frozen, after[name]), name
    assert any(not torch.equal(a, b) for a, b in zip(streams_before, model.trainable_stream_parameters()))
    log = (Path(run("diffusion").directory) / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:2] == ["step", "time_s"] and "edge" in log[0] and len(log) == 3


def _full_model_on_a_frozen_backbone(**overrides):
    """A fresh full model (fixed seed) ready for the ``diffusion`` stage."""
    torch.manual_seed(0)
    model = build_model(preset("small", ablation="full", psr_scale=0.2, **overrides))
    pretend_pretrained(model)  # a fresh UNet ends in a zero convolution: nothing inside it gets a gradient
    model.freeze_backbone()
    return model


def _lesioned_blob(name, seed):
    """A blob volume with a small lesion of lower PSR in its white matter."""
    volume = _blob_volume(name, seed)
    volume.lesion = np.zeros(volume.brain.shape, bool)
    volume.lesion[11:14, 11:14, 11:14] = True
    volume.psr[volume.lesion] = 0.09
    return volume


def _one_stream_step(tmp_path, name, lora_b_lr_multiplier, decoded_weight=0.0, lesion_weight=0.0,
                     lesion_fraction=0.0, high_noise_weight=0.0):
    """A fresh full model (fixed seed) after one ``diffusion`` step; its LoRA B before and after."""
    model = _full_model_on_a_frozen_backbone()
    rec = recipe("small")
    rec.patch_size, rec.batch_size = [16, 16, 16], 1
    rec.lora_b_lr_multiplier = lora_b_lr_multiplier
    rec.diffusion_decoded_weight = decoded_weight
    rec.diffusion_decoded_lesion_weight = lesion_weight
    rec.diffusion_decoded_high_noise_weight = high_noise_weight
    rec.diffusion_lesion_fraction = lesion_fraction
    sampler = PatchSampler([_lesioned_blob("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    before = [p.detach().clone() for p in model.lora_up_parameters()]
    st.train_streams(model, st.StageRun(sampler, rec, tmp_path / name, 1, DistributedContext(),
                                        TerminationFlag(), False, 0, torch.device("cpu")))
    return before, [p.detach().clone() for p in model.lora_up_parameters()]


def test_lora_b_learns_at_its_own_multiple_of_the_rate(tmp_path):
    # Adam's first step moves every weight with a gradient by about the rate, so B's largest move
    # is the group's rate: 8 times as far with the multiplier at 8
    before, plain = _one_stream_step(tmp_path, "plain", 1.0)
    _, faster = _one_stream_step(tmp_path, "faster", 8.0)
    assert before and all(torch.count_nonzero(b) == 0 for b in before)  # B starts at zero
    moved_plain = max(float(p.abs().max()) for p in plain)
    moved_faster = max(float(p.abs().max()) for p in faster)
    assert moved_plain > 0
    assert moved_faster / moved_plain == pytest.approx(8.0, rel=0.02)


def test_the_decoded_term_reaches_the_streams_and_is_logged(tmp_path):
    # off (the paper's loss) it is not computed; on, its gradient moves the streams differently
    before, plain = _one_stream_step(tmp_path, "plain", 1.0)
    _, decoded = _one_stream_step(tmp_path, "decoded", 1.0, decoded_weight=5.0)
    assert any(not torch.equal(a, b) for a, b in zip(plain, decoded))
    header_plain = (tmp_path / "plain" / "log.csv").read_text().splitlines()[0].split(",")
    header_decoded = (tmp_path / "decoded" / "log.csv").read_text().splitlines()[0].split(",")
    assert "decoded" not in header_plain and "decoded" in header_decoded
    row = _log_row(tmp_path / "decoded")
    assert float(row["decoded"]) > 0


def test_the_high_noise_ramp_of_the_decoded_term_reaches_the_streams(tmp_path):
    assert recipe("small").diffusion_decoded_high_noise_weight == 0.0  # off, as every shipped model was trained
    _, constant = _one_stream_step(tmp_path, "constant", 1.0, decoded_weight=1.0)
    _, ramped = _one_stream_step(tmp_path, "ramped", 1.0, decoded_weight=1.0, high_noise_weight=20.0)
    assert any(not torch.equal(a, b) for a, b in zip(constant, ramped))
    # on its own (no constant part) it still turns the term on, and the log keeps the unweighted L1
    _, plain = _one_stream_step(tmp_path, "plain", 1.0)
    _, alone = _one_stream_step(tmp_path, "alone", 1.0, high_noise_weight=20.0)
    assert any(not torch.equal(a, b) for a, b in zip(plain, alone))
    rows = {n: _log_row(tmp_path / n) for n in ("constant", "alone")}
    # the same model, patch and noise: the logged L1 does not depend on the weights
    assert float(rows["alone"]["decoded"]) == pytest.approx(float(rows["constant"]["decoded"]), rel=1e-5)


def test_the_lesion_term_reaches_the_streams_and_is_logged(tmp_path):
    assert recipe("small").diffusion_decoded_lesion_weight == 0.0  # off, as every shipped model was trained
    # the same lesion-centred patch either way: only the lesion term differs
    _, decoded = _one_stream_step(tmp_path, "decoded", 1.0, decoded_weight=1.0, lesion_fraction=1.0)
    _, lesion = _one_stream_step(tmp_path, "lesion", 1.0, decoded_weight=1.0, lesion_weight=5.0,
                                 lesion_fraction=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(decoded, lesion))
    row = _log_row(tmp_path / "lesion")
    assert "decoded_lesion" not in (tmp_path / "decoded" / "log.csv").read_text().splitlines()[0].split(",")
    assert float(row["decoded_lesion"]) > 0  # the one patch is lesion-centred, so the term is not the empty 0
    # on its own, without the whole-patch term, it still counts
    _, alone = _one_stream_step(tmp_path, "alone", 1.0, lesion_weight=5.0, lesion_fraction=1.0)
    _, plain = _one_stream_step(tmp_path, "plain", 1.0, lesion_fraction=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(alone, plain))
    header = (tmp_path / "alone" / "log.csv").read_text().splitlines()[0].split(",")
    assert "decoded_lesion" in header and "decoded" not in header


def test_the_edge_term_is_the_same_whether_or_not_the_decoded_term_shares_its_decode(tmp_path):
    def edge(decoded_weight):
        model = _full_model_on_a_frozen_backbone()
        rec = recipe("small")
        rec.patch_size, rec.batch_size, rec.edge_timestep_max = [16, 16, 16], 2, 1000
        rec.diffusion_decoded_weight = decoded_weight
        sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
        name = f"edge{decoded_weight}"
        st.train_streams(model, st.StageRun(sampler, rec, tmp_path / name, 1, DistributedContext(),
                                            TerminationFlag(), False, 0, torch.device("cpu")))
        return float(_log_row(tmp_path / name)["edge"])

    assert edge(1.0) == pytest.approx(edge(0.0), rel=1e-4)


class _RecordingSampler(PatchSampler):
    """The real sampler, keeping the options each stage asked it for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def batch(self, step, batch_size, **options):
        self.requests.append(options)
        return super().batch(step, batch_size, **options)


def test_the_diffusion_stage_draws_lesion_centred_patches_at_the_recipes_fraction(tmp_path):
    assert recipe("small").diffusion_lesion_fraction == 0.0  # uniform patches, as the paper and every shipped model
    lesioned = _blob_volume("a", 0)
    lesioned.lesion = np.zeros(lesioned.brain.shape, bool)
    lesioned.lesion[12, 12, 12] = True
    model = _full_model_on_a_frozen_backbone()
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.diffusion_lesion_fraction = [16, 16, 16], 2, 0.5
    sampler = _RecordingSampler([lesioned, _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    st.train_streams(model, st.StageRun(sampler, rec, tmp_path / "lesion", 2, DistributedContext(),
                                        TerminationFlag(), False, 0, torch.device("cpu")))
    assert sampler.requests == [{"stream": 4, "lesion_fraction": 0.5}] * 2


def _encoder_after_one_joint_step(tmp_path, name, cond_decoded_weight):
    """E_cond's encoder weights after one ``diffusion`` step that trains it with the streams."""
    model = _full_model_on_a_frozen_backbone()
    rec = recipe("small")
    rec.patch_size, rec.batch_size = [16, 16, 16], 1
    rec.cond_encoder_in_diffusion = True
    rec.diffusion_cond_decoded_weight = cond_decoded_weight
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    st.train_streams(model, st.StageRun(sampler, rec, tmp_path / name, 1, DistributedContext(),
                                        TerminationFlag(), False, 0, torch.device("cpu")))
    return st._encoder_parameters(model.cond_autoencoder), _log_row(tmp_path / name)


def test_the_decoded_term_on_z_c_reaches_the_conditioning_encoder_and_is_logged(tmp_path):
    assert recipe("small").diffusion_cond_decoded_weight == 0.0  # off, as every shipped model was trained
    plain, plain_log = _encoder_after_one_joint_step(tmp_path, "plain", 0.0)
    kept, kept_log = _encoder_after_one_joint_step(tmp_path, "kept", 5.0)
    assert any(not torch.equal(a, b) for a, b in zip(plain, kept))  # its gradient moves E_cond
    assert "cond_decoded" not in plain_log and float(kept_log["cond_decoded"]) > 0
    # the same model, patch and noise: the noise loss before the step does not depend on the term
    assert float(kept_log["mse"]) == pytest.approx(float(plain_log["mse"]), rel=1e-5)


def test_the_condition_skip_trains_with_the_streams(tmp_path):
    """``condition_skip``: its blend weights move in the ``diffusion`` stage, at the gates' rate."""
    assert recipe("small").condition_skip is False  # off, as every shipped model was trained
    torch.manual_seed(0)
    model = build_model(preset("small", ablation="full", psr_scale=0.2, streams={"condition_skip": True}))
    pretend_pretrained(model)
    model.freeze_backbone()
    before = model.skip.logits.detach().clone()
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.condition_skip = [16, 16, 16], 1, True
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    st.train_streams(model, st.StageRun(sampler, rec, tmp_path / "skip", 1, DistributedContext(),
                                        TerminationFlag(), False, 0, torch.device("cpu")))
    moved = (model.skip.logits.detach() - before).abs()
    # Adam's first step moves a weight with a gradient by about its group's rate
    rate = rec.learning_rate["diffusion"] * rec.gate_lr_multiplier
    assert float(moved.max()) == pytest.approx(rate, rel=0.05)
    assert float(_log_row(tmp_path / "skip")["mse"]) > 0


def _network_inputs_of_one_step(tmp_path, name, perturbation, clean=None, recipe_overrides=None, **overrides):
    """The (z_t, t) the network read in one ``diffusion`` step, and the model's abar_t (``clean``: a
    list that receives the clean latents z_y; ``recipe_overrides``: recipe fields to set)."""
    model = _full_model_on_a_frozen_backbone(**overrides)
    seen = []
    network_output, encode_psr = model.network_output, model.encode_psr

    def recording(z_t, t, z_c):
        seen.append((z_t.detach().clone(), t.clone()))
        return network_output(z_t, t, z_c)

    def encoding(psr01):
        z_y = encode_psr(psr01)
        if clean is not None:
            clean.append(z_y.detach().clone())
        return z_y

    model.network_output, model.encode_psr = recording, encoding
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.diffusion_input_perturbation = [16, 16, 16], 2, perturbation
    for key, value in (recipe_overrides or {}).items():
        setattr(rec, key, value)
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    st.train_streams(model, st.StageRun(sampler, rec, tmp_path / name, 1, DistributedContext(),
                                        TerminationFlag(), False, 0, torch.device("cpu")))
    return seen[0], model.alphas_cumprod


def test_input_perturbation_adds_gamma_times_the_noise_level_to_what_the_network_reads(tmp_path):
    assert recipe("small").diffusion_input_perturbation == 0.0  # off, as every shipped model was trained
    (plain, t), _ = _network_inputs_of_one_step(tmp_path, "plain", 0.0)
    (perturbed, t_perturbed), abar = _network_inputs_of_one_step(tmp_path, "perturbed", 0.5)
    assert torch.equal(t, t_perturbed)  # the same timesteps and forward noise: only the extra draw differs
    extra = (perturbed - plain) / (1 - abar[t]).sqrt().view(-1, 1, 1, 1, 1)
    assert float(extra.std()) == pytest.approx(0.5, rel=0.1)
    assert abs(float(extra.mean())) < 0.05


def test_a_rescaled_schedule_is_the_one_the_diffusion_stage_noises_with(tmp_path):
    """``terminal_snr``: the same draws (timesteps, noise) mix z_y and the noise by the rescaled abar_t."""
    clean = []
    (plain, t), abar = _network_inputs_of_one_step(tmp_path, "plain", 0.0, clean)
    (rescaled, t_rescaled), abar_rescaled = _network_inputs_of_one_step(
        tmp_path, "rescaled", 0.0, clean, schedule={"terminal_snr": 1e-6})
    assert torch.equal(t, t_rescaled) and torch.equal(clean[0], clean[1])
    assert float(abar_rescaled[-1]) == pytest.approx(1e-6, rel=1e-3)
    shape = (-1, 1, 1, 1, 1)
    noise = (plain - abar[t].sqrt().view(shape) * clean[0]) / (1 - abar[t]).sqrt().view(shape)
    expected = abar_rescaled[t].sqrt().view(shape) * clean[0] + (1 - abar_rescaled[t]).sqrt().view(shape) * noise
    assert torch.allclose(rescaled, expected, atol=1e-4)
    assert not torch.allclose(rescaled, plain, atol=1e-4)


def test_the_uniform_draw_of_timesteps_is_unchanged_by_the_band_option():
    """Without a band (or at density 1) every stage draws exactly what the shipped models were trained on."""
    def draw(**band):
        return st.sample_timesteps(4096, 1000, 0.0, torch.Generator().manual_seed(3), **band)

    expected = (torch.rand(4096, generator=torch.Generator().manual_seed(3)) * 1000).long()
    assert torch.equal(draw(), expected)
    assert torch.equal(draw(band=[500, 750], band_density=1.0), expected)
    assert torch.equal(draw(band=[]), expected)


def test_a_timestep_band_is_drawn_at_its_density_and_the_rest_stays_uniform():
    t = st.sample_timesteps(200000, 1000, 0.0, torch.Generator().manual_seed(0), band=[500, 750], band_density=3.0)
    assert int(t.min()) == 0 and int(t.max()) == 999
    inside = (t >= 500) & (t < 750)
    # mass 3 * 250 of 250 + 3 * 250 + 500 = 1500: half the draws, each t inside 3x as likely as one outside
    assert float(inside.float().mean()) == pytest.approx(0.5, abs=0.01)
    counts = torch.bincount(t, minlength=1000).float()
    assert float(counts[500:750].mean() / counts[:500].mean()) == pytest.approx(3.0, rel=0.05)
    assert float(counts[:500].mean() / counts[750:].mean()) == pytest.approx(1.0, rel=0.05)
    assert float(counts[:250].mean() / counts[250:500].mean()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("overrides", [
    {"timestep_band": [750, 500], "timestep_band_density": 3.0},
    {"timestep_band": [500], "timestep_band_density": 3.0},
    {"timestep_band": [500, 750], "timestep_band_density": 0.5},
    {"timestep_band": [500, 750], "timestep_band_density": 3.0, "high_noise_bias": 1.0},
])
def test_a_timestep_band_that_cannot_be_drawn_is_refused_with_the_recipe(overrides):
    import dataclasses

    with pytest.raises(ValueError, match="timestep_band"):
        dataclasses.replace(recipe("small"), **overrides)


def test_the_streams_train_on_timesteps_from_the_recipes_band(tmp_path):
    assert recipe("small").timestep_band == []  # off, as every shipped model was trained
    (_, t), _ = _network_inputs_of_one_step(tmp_path, "plain", 0.0)
    # nearly every draw lands on t = 500
    (_, t_band), _ = _network_inputs_of_one_step(
        tmp_path, "band", 0.0, recipe_overrides={"timestep_band": [500, 501], "timestep_band_density": 1e6})
    assert t_band.tolist() == [500, 500] and t.tolist() != [500, 500]


def test_a_weight_average_follows_its_closed_form_and_warms_up():
    parameter = nn.Parameter(torch.zeros(3))
    average = WeightAverage([parameter], decay=0.9)
    expected = None
    for value in (4.0, 8.0, 2.0, 6.0, 1.0):
        with torch.no_grad():
            parameter.fill_(value)
        decay = min(0.9, 1.0 - (1.0 + int(average.updates)) ** -0.75)
        expected = value if expected is None else decay * expected + (1.0 - decay) * value
        average.update()
    assert int(average.updates) == 5 and average.current_decay() == pytest.approx(1 - 6**-0.75)
    assert torch.allclose(average.average_0, torch.full((3,), expected))
    assert average.average_0[0] != parameter[0]  # the average is not the last value
    average.copy_to()
    assert torch.equal(parameter.detach(), average.average_0)
    assert list(average.parameters()) == []  # an optimizer never sees the average


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_weight_average_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        recipe("small").__class__(ema_decay=decay)
    if decay != -0.1:
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            WeightAverage([nn.Parameter(torch.zeros(1))], decay)


def _streams_after(tmp_path, name, ema_decay, resume=False, stop_before=None):
    """The stream parameters of a fresh full model after a 4-step diffusion stage (checkpoints every 2
    steps); ``stop_before``: SIGTERM arrives during that step, so the stage stops there with a checkpoint."""
    model = _full_model_on_a_frozen_backbone()
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.steps_per_epoch = [16, 16, 16], 1, 2
    rec.ema_decay = ema_decay
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    flag = TerminationFlag()
    original_batch = sampler.batch

    def batch(step, *args, **kwargs):
        flag.requested = flag.requested or step == stop_before
        return original_batch(step, *args, **kwargs)

    sampler.batch = batch
    st.train_streams(model, st.StageRun(sampler, rec, tmp_path / name, 4, DistributedContext(), flag, resume, 0,
                                        torch.device("cpu")))
    return [p.detach().clone() for p in model.trainable_stream_parameters()]


def test_the_streams_stage_ends_with_the_weight_average_and_resumes_it(tmp_path):
    last = _streams_after(tmp_path, "last", 0.0)
    averaged = _streams_after(tmp_path, "averaged", 0.999)
    assert any(not torch.equal(a, b) for a, b in zip(last, averaged))
    state = torch.load(tmp_path / "averaged" / "checkpoint.pt", weights_only=True)
    average = state["modules"]["weight_average"]
    assert int(average["updates"]) == 4
    assert all(torch.equal(value, average[f"average_{i}"]) for i, value in enumerate(averaged))
    # SIGTERM during the second step: a checkpoint after it, then a resumed run: the same average as one run
    with pytest.raises(TrainingInterrupted):
        _streams_after(tmp_path, "resumed", 0.999, stop_before=1)
    interrupted = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert int(interrupted["step"]) == 2 and int(interrupted["modules"]["weight_average"]["updates"]) == 2
    resumed = _streams_after(tmp_path, "resumed", 0.999, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(averaged, resumed))


def test_the_backbone_stage_ends_with_the_weight_average(tmp_path):
    torch.manual_seed(0)
    model = build_model(preset("small", ablation="full", psr_scale=0.2))
    rec = recipe("small")
    rec.patch_size, rec.batch_size, rec.ema_decay = [16, 16, 16], 1, 0.999
    sampler = PatchSampler([_blob_volume("a", 0), _blob_volume("b", 1)], rec.patch_size, 0.2, seed=0)
    st.train_backbone(model, st.StageRun(sampler, rec, tmp_path / "backbone", 3, DistributedContext(),
                                         TerminationFlag(), False, 0, torch.device("cpu")))
    average = torch.load(tmp_path / "backbone" / "checkpoint.pt", weights_only=True)["modules"]["weight_average"]
    assert int(average["updates"]) == 3
    trained = list(model.backbone_parameters())
    assert all(torch.equal(p.detach(), average[f"average_{i}"]) for i, p in enumerate(trained))
