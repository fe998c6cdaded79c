"""benchmarks/autoencoder_level.py: the PSR autoencoder's level on patches and in windows, on a tiny model."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_the_level_is_measured_on_patches_and_at_each_overlap_and_the_model_keeps_its_overlap(tmp_path, capsys):
    import torch

    from autoencoder_level import main
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import load_model, save_model
    from dev_ablations import store_volumes
    from tests.benchmarks.test_dev_ablations import _volumes
    from tests.models.tiny import pretend_pretrained, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(psr_scale=0.3))
    pretend_pretrained(model)
    save_model(model, tmp_path / "model")
    store_volumes(_volumes(2, shape=(64, 60, 52), seed=3), tmp_path / "scans.npz")  # larger than one window
    args = ["--model", str(tmp_path / "model"), "--volumes", str(tmp_path / "scans.npz"), "--patch-batches", "1",
            "--overlaps", "0,0.5", "--blends", "gaussian,constant", "--threads", "1"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["sub-00", "sub-01"]
    last = dict(item.split("=") for item in lines[-1].split())
    windows = [f"window_{m}_{b}_{o}" for b in ("gaussian", "constant") for o in ("0", "0.5") for m in ("bias", "rmse")]
    assert set(last) == {"patch_bias", *windows, "scans"} and last["scans"] == "2"
    values = [float(last[k]) for k in ("patch_bias", "window_bias_gaussian_0", "window_bias_gaussian_0.5",
                                       "window_bias_constant_0.5")]
    assert all(abs(v) < 0.3 for v in values) and len(set(values[1:])) == 3  # overlap and weights change the blend
    assert float(last["window_bias_constant_0"]) == float(last["window_bias_gaussian_0"])  # one window per voxel
    assert all(float(last[k]) > 0 for k in windows if "rmse" in k)
    per_scan = [float(x) for x in re.findall(r"gaussian0 ([+-][0-9.]+)", "\n".join(lines[:2]))]
    assert len(per_scan) == 2 and abs(sum(per_scan) / 2 - values[1]) < 1e-4  # the last line means the scans
    assert load_model(tmp_path / "model").config.sampling.autoencoder_overlap == 0.5  # the file is untouched
    assert main([*args[:-6], "--overlaps", "1.0"]) == 2  # an overlap of 1 is refused
    assert main([*args[:-6], "--blends", "median"]) == 2
    assert main([*args[:-6], "--blends", "gaussian/median"]) == 2


def test_the_decoder_takes_its_own_blend(tmp_path, capsys):
    """``--blends ENC/DEC``: gaussian/gaussian is gaussian to the digit, constant decoding changes the level,
    and the model's own settings are back afterwards."""
    import torch

    from autoencoder_level import main
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import save_model
    from dev_ablations import store_volumes
    from tests.benchmarks.test_dev_ablations import _volumes
    from tests.models.tiny import pretend_pretrained, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(psr_scale=0.3))
    pretend_pretrained(model)
    save_model(model, tmp_path / "model")
    store_volumes(_volumes(1, shape=(64, 60, 52), seed=3), tmp_path / "scans.npz")
    assert main(["--model", str(tmp_path / "model"), "--volumes", str(tmp_path / "scans.npz"), "--patch-batches",
                 "1", "--overlaps", "0.5", "--blends", "gaussian,gaussian/gaussian,gaussian/constant",
                 "--threads", "1"]) == 0
    last = dict(item.split("=") for item in capsys.readouterr().out.strip().splitlines()[-1].split())
    assert last["window_bias_gaussian_0.5"] == last["window_bias_gaussian/gaussian_0.5"]
    assert last["window_bias_gaussian/constant_0.5"] != last["window_bias_gaussian_0.5"]
