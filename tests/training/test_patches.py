"""Patches: reproducible per (seed, rank, step), inside the brain, PSR scaled by the cohort constant only."""

import numpy as np

from demist_bids.training.patches import Augmentation, PatchSampler
from demist_bids.training.volumes import TrainingVolume, cohort_psr_scale


def _volume(name, level, shape=(20, 24, 18)):
    rng = np.random.default_rng(len(name))
    brain = np.zeros(shape, bool)
    brain[4:16, 5:19, 3:15] = True
    psr = np.where(brain, level, 0).astype(np.float32)
    cond = rng.random((2, *shape)).astype(np.float32) * brain
    return TrainingVolume(name, cond, psr, brain)


def test_cohort_scale_keeps_subject_differences():
    volumes = [_volume("a", 0.1), _volume("bb", 0.2)]
    scale = cohort_psr_scale(volumes)
    assert np.isclose(scale, 0.2)
    sampler = PatchSampler(volumes, (8, 8, 8), scale, seed=0, augmentation=Augmentation(enabled=False))
    batch = sampler.batch(0, 16)
    assert batch["cond"].shape == (16, 2, 8, 8, 8) and batch["psr01"].shape == (16, 1, 8, 8, 8)
    centre = batch["psr01"][:, 0, 4, 4, 4].numpy()
    assert set(np.round(centre, 4)) <= {0.5, 1.0}  # the low-PSR subject stays at half, never rescaled
    assert (batch["brain"][:, 0, 4, 4, 4] == 1).all()  # centres lie in the brain


def test_reproducible_per_step_and_rank():
    volumes = [_volume("a", 0.1), _volume("bb", 0.2)]
    a = PatchSampler(volumes, (8, 8, 8), 0.2, seed=3)
    b = PatchSampler(volumes, (8, 8, 8), 0.2, seed=3)
    other_rank = PatchSampler(volumes, (8, 8, 8), 0.2, seed=3, rank=1)
    assert all((a.batch(5, 2)[k] == b.batch(5, 2)[k]).all() for k in ("cond", "psr01"))
    assert not (a.batch(5, 2)["cond"] == other_rank.batch(5, 2)["cond"]).all()
    assert not (a.batch(5, 2)["cond"] == a.batch(6, 2)["cond"]).all()


def test_patch_at_volume_edge_is_zero_padded():
    volume = _volume("a", 0.1)
    volume.brain[:] = False
    volume.brain[0, 0, 0] = True
    sampler = PatchSampler([volume], (8, 8, 8), 0.1, seed=0, augmentation=Augmentation(enabled=False))
    batch = sampler.batch(0, 1)
    assert batch["cond"][0, :, :4].abs().sum() == 0  # the half outside the volume


def test_lesion_fraction_centres_patches_on_lesions_and_falls_back_without_a_mask():
    lesioned = _volume("a", 0.1)
    lesion = np.zeros(lesioned.brain.shape, bool)
    lesion[10, 12, 8] = True  # one lesion voxel: a uniform draw would almost never hit it
    lesioned.lesion = lesion
    no_mask = _volume("bb", 0.2)  # a control: no lesion mask at all
    sampler = PatchSampler([lesioned, no_mask], (8, 8, 8), 0.2, seed=0,
                           augmentation=Augmentation(enabled=False))
    centre_value = lesioned.cond[:, 10, 12, 8]
    uniform = sampler.batch(0, 64)
    always = sampler.batch(0, 64, lesion_fraction=1.0)

    def at_lesion(batch):
        return [bool(np.allclose(c[:, 4, 4, 4], centre_value)) for c in batch["cond"].numpy()]

    from_a = [np.isclose(p[0, 4, 4, 4], 0.5) for p in always["psr01"].numpy()]
    assert sum(at_lesion(always)) == sum(from_a) > 10  # every patch of the lesioned scan is on the lesion
    assert sum(at_lesion(uniform)) <= 2
    assert (always["brain"][:, 0, 4, 4, 4] == 1).all()  # the control's patches still lie in its brain
    # fraction 0 draws exactly what the sampler drew before the option existed
    assert (sampler.batch(3, 4, lesion_fraction=0.0)["cond"] == sampler.batch(3, 4)["cond"]).all()


def test_the_lesion_patch_follows_its_patch_and_is_zero_without_a_mask():
    lesioned = _volume("a", 0.1)
    x = np.arange(lesioned.brain.shape[0], dtype=np.float32)[:, None, None] / 100
    lesioned.cond[0] = np.where(lesioned.brain, x, 0)  # T1w holds each voxel's left-right index
    lesioned.lesion = np.zeros(lesioned.brain.shape, bool)
    lesioned.lesion[6:9, 10, 8] = True  # three voxels along left-right
    lesioned.lesion[0, 0, 0] = True  # outside the brain: not a lesion the losses should see
    sampler = PatchSampler([lesioned, _volume("bb", 0.2)], (8, 8, 8), 0.2, seed=0,
                           augmentation=Augmentation(gain_range=(1, 1), gamma_range=(1, 1)))
    batch = sampler.batch(0, 64, lesion_fraction=0.5)
    lesion, psr, t1w = batch["lesion"].numpy(), batch["psr01"].numpy(), batch["cond"].numpy()[:, 0]
    assert lesion.shape == psr.shape and set(np.unique(lesion)) <= {0.0, 1.0}
    from_a = np.isclose(psr[:, 0, 4, 4, 4], 0.5)
    assert not lesion[~from_a].any()  # the control has no mask: all zeros
    on_lesion = [i for i in np.flatnonzero(from_a) if lesion[i, 0, 4, 4, 4]]
    assert len(on_lesion) > 5
    flipped = 0
    for i in on_lesion:  # cut, and flipped, with the T1w it belongs to
        assert lesion[i].sum() == 3
        assert np.allclose(sorted(t1w[i][lesion[i, 0] > 0]), [0.06, 0.07, 0.08])
        flipped += int(t1w[i, 0, 4, 4] > t1w[i, 7, 4, 4])
    assert 0 < flipped < len(on_lesion)
