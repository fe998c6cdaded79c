"""benchmarks/stream_diagnostics.py: its measures on known cases, and the script end to end on a tiny model."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import torch

from demist_bids.models.config import AnchorConfig
from demist_bids.models.demist import build_model
from demist_bids.models.io import save_model
from tests.models.tiny import pretend_pretrained, pretend_trained_streams, tiny_config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "stream_diagnostics.py"
LAST_LINE = re.compile(
    r"^cond_ratio_t500=[0-9.]+ prior_ratio=[0-9.]+ noise_psnr_db=-?[0-9.]+ nodiff_psnr_db=-?[0-9.]+ "
    r"anchored_psnr_db=(nan|-?[0-9.]+)$"
)


def _diagnostics():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import stream_diagnostics
    finally:
        sys.path.remove(str(BENCHMARKS))
    return stream_diagnostics


def test_oracle_is_exact_when_the_condition_is_the_target_and_a_mismatch_is_measured():
    diagnostics = _diagnostics()
    model = build_model(tiny_config("full"))
    pretend_pretrained(model)
    generator = torch.Generator().manual_seed(0)
    z_y = 0.5 + 2.0 * torch.randn((4, 8, 4, 4, 4), generator=generator)
    table = diagnostics.noise_mse(model, z_y, z_y.clone(), z_y.roll(1, dims=0), timesteps=(300, 900), repeats=1)
    for row in table.values():
        assert row["oracle"] < 1e-8  # z_c = z_y: the oracle recovers the noise exactly
        assert row["mismatched"] == row["full"] or not math.isclose(row["mismatched"], row["full"])
    # the Gaussian denoiser of the latents' own statistics beats predicting zero noise (MSE 1)
    assert all(row["gaussian"] < 1.0 for row in table.values())
    cond_ratio, prior_ratio = diagnostics.summary_ratios(table)
    assert cond_ratio > 0 and prior_ratio > 0


def test_streams_at_zero_init_do_not_use_the_condition():
    diagnostics = _diagnostics()
    model = build_model(tiny_config("full"))
    pretend_pretrained(model)  # streams still zero: the model is its backbone
    z = torch.randn((4, 8, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    table = diagnostics.noise_mse(model, z, z + 1.0, z.roll(1, dims=0), timesteps=(500, 900), repeats=1)
    for row in table.values():
        assert math.isclose(row["full"], row["backbone"], rel_tol=1e-5)
        assert math.isclose(row["mismatched"], row["full"], rel_tol=1e-5)
    assert math.isclose(diagnostics.summary_ratios(table)[0], 1.0, rel_tol=1e-4)


def test_script_prints_every_section_and_the_summary_line(tmp_path):
    model = build_model(tiny_config("full", psr_scale=0.3))
    pretend_pretrained(model)
    pretend_trained_streams(model)
    model.config.anchor = AnchorConfig(timesteps=[0, 999], weights=[[0.0] * 8, [1.0] * 8])
    directory = save_model(model, tmp_path / "model")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(directory), "--synthetic-head", "--shape", "32", "32", "32",
         "--patches", "4", "--repeats", "1", "--prior-samples", "2", "--steps", "2", "--threads", "1",
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for section in ("noise MSE, 4 training-size patches", "noise MSE, whole phantom box",
                    "latent channel statistics", "no diffusion (decode z_c)"):
        assert section in out
    rows = [line.split() for line in out.splitlines() if re.match(r"^(50|150|300|500|700|850|950) ", line)]
    assert len(rows) == 14  # 7 timesteps, patches and whole box
    starts = [line.split()[0] for line in out.splitlines() if re.match(r"^(0\.15|0\.3|0\.5|0\.7|1\.0) ", line)]
    assert starts == ["0.15", "0.3", "0.5", "0.7", "1.0"]
    assert "streams_on  streams_off  anchored" in out  # the fitted blend gets its own column
    assert all(len(line.split()) == 4 for line in out.splitlines() if re.match(r"^(0\.15|1\.0) ", line))
    assert LAST_LINE.match(out.strip().splitlines()[-1]), out.strip().splitlines()[-1]
    assert "anchored_psnr_db=nan" not in out
    assert {p.name for p in tmp_path.iterdir()} <= {"model", "work"}  # writes nothing else
