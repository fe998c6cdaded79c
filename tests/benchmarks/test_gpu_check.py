"""benchmarks/gpu_check.sh --dry-run end to end on the CPU, and the parts it rests on.

The GPU check itself needs a GPU; nothing here does. The dry run goes through the
same code (bundle-format weights, the bundle loaders, step timing at fp32 and bf16,
FLOP counting, ``synthesize``, the random student) with a tiny paper-shaped network.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import resource
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split())


def test_dry_run_prints_every_figure():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NIPYPE_NO_ET": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--threads", "1", "--peak-tflops", "0.5"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("# gpu_check: DRY RUN")
    assert re.search(r"weights=bundle-format source=(monai-generative|renamed-monai-keys) backbone_old_keys=\d+",
                     run.stdout)
    last = _fields(lines[-1])
    module = _module()
    assert tuple(last) == module.LAST_LINE_KEYS
    values = {key: float(value) for key, value in last.items()}
    for key in ("step_fp32_s", "step_bf16_s", "ddim_total_s", "student_total_s", "peak_mem_gb",
                "step_tflop", "ddim_tflop"):
        assert math.isfinite(values[key]) and values[key] > 0, key
    assert values["ddim_steps"] == 3 and values["student_steps"] == 2
    assert values["peak_bf16_tflops"] == 0.5  # the override
    # the ratios are time over FLOPs / peak rate (rounded to the printed digits)
    bound = values["step_tflop"] / 0.5
    assert values["step_bound_ratio"] == pytest.approx(values["step_bf16_s"] / bound, rel=0.02)
    assert values["ddim_bound_ratio"] == pytest.approx(values["ddim_total_s"] / (values["ddim_tflop"] / 0.5),
                                                       rel=0.02)
    # a 3-step synthesis costs more than 3 denoising steps (the encode and the decode) and its FLOPs say so
    assert values["ddim_tflop"] > 3 * values["step_tflop"]
    # well under a minute on one quiet core: its CPU time (the wall time on a shared machine is not its own)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu_s < 40, cpu_s


def test_a_device_missing_from_the_table_has_no_ratio_not_a_guess():
    module = _module()
    assert module.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert module.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert module.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert module.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert module.peak_bf16_tflops("NVIDIA L40S") == 362.0
    assert module.peak_bf16_tflops("NVIDIA GeForce RTX 4090") == 165.0
    assert module.peak_bf16_tflops("Tesla V100-SXM2-16GB") is None
    assert math.isnan(module._ratio(1.0, 10**12, None))


def test_without_a_gpu_the_full_check_refuses_and_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert run.returncode == 2
    assert "--dry-run" in run.stderr


def test_renamed_keys_are_the_bundle_layout_and_load_through_the_bundle_loaders():
    """The fallback used without monai-generative writes what monai-generative writes."""
    module = _module()
    config = module.tiny_paper_config()
    backbone, autoencoder = module.renamed_old_format(config)
    pytest.importorskip("generative.networks.nets")
    genuine_backbone, genuine_autoencoder = module._generative_networks(config)
    assert {k: v.shape for k, v in backbone.items()} == {k: v.shape for k, v in genuine_backbone.items()}
    assert {k: v.shape for k, v in autoencoder.items()} == {k: v.shape for k, v in genuine_autoencoder.items()}


def test_bundle_weights_fill_the_model_and_the_student_differs_only_in_its_streams(tmp_path):
    module = _module()
    model, source, old_keys = module.build_checked_model(module.tiny_paper_config(), tmp_path)
    saved = torch.load(tmp_path / "model_brats_mri_generative_diffusion_v1.pt", weights_only=True)
    assert old_keys == len(saved) and any(".proj_attn." in key for key in saved)  # old layout on disk
    z = torch.randn(1, 8, 4, 4, 4)
    t = torch.tensor([10])
    with torch.no_grad():
        assert model.backbone_noise(z, t).abs().max() > 0  # not the zero output of a fresh UNet
        # the streams were moved off their zero initialisation: the condition changes the prediction
        assert not torch.allclose(model.predict_noise(z, t, z), model.backbone_noise(z, t))
    student = module.random_student(model, 2)
    assert student.config.sampling.distilled_steps == 2 and student.config.sampling.sampler == "ddim"
    assert model.config.sampling.distilled_steps == 0  # the teacher's config is untouched
    for (name, a), (_, b) in zip(model.named_parameters(), student.named_parameters()):
        stream = any(a is p for p in model.trainable_stream_parameters())
        assert torch.equal(a, b) != stream, name
