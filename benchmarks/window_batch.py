"""Time the autoencoder passes of one volume with windows one at a time and batched.

Usage::

    python benchmarks/window_batch.py --preset small --shape 160 200 168 [--model DIR] [--batch 4]

The autoencoders always run in Gaussian-blended windows of the training patch
size (:mod:`demist_bids.inference.sampler`). This times the encode and decode
passes of a brain-sized volume with one window per network call (the baseline)
and with ``--batch`` windows per call, side by side in one process, and checks
that both give the same latents and image. Without ``--model`` the preset is
built with random weights (speed does not depend on the weights).

Last line::

    windows=<n> baseline_s=<s> batched_s=<s> speedup=<x> max_abs_diff=<d>
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on shared CPUs

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _counting(fn, counter: list[int]):
    """``fn`` that also adds the number of windows it is given to ``counter[0]``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        counter[0] += len(x)
        return fn(x)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["paper", "small"], default="small")
    parser.add_argument("--model", default=None, help="a model directory instead of random weights")
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 200, 168], metavar=("X", "Y", "Z"))
    parser.add_argument("--patch", type=int, default=32, help="training patch size (random-weight models)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)

    from demist_bids.inference.memory import plan_inference
    from demist_bids.inference.sampler import VolumeRunner
    from demist_bids.models.config import preset
    from demist_bids.models.demist import build_model
    from demist_bids.models.io import load_model

    if opts.model:
        model = load_model(opts.model)
    else:
        torch.manual_seed(0)
        model = build_model(preset(opts.preset, patch_size=[opts.patch] * 3))
    model.eval()
    windows = [0]
    model.encode_condition = _counting(model.encode_condition, windows)
    model.decode_psr = _counting(model.decode_psr, windows)
    shape = tuple(int(math.ceil(n / model.config.size_multiple) * model.config.size_multiple) for n in opts.shape)
    rng = np.random.default_rng(0)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = np.exp(-sum(g**2 for g in grids) * 2.0)
    cond = np.stack([blob, 0.6 * blob]) + 0.02 * rng.standard_normal((2, *shape))
    cond = torch.from_numpy(np.clip(cond, 0, 1).astype(np.float32))[None]

    plan = plan_inference(model.config, shape, "cpu", sdpa=False, window="whole")
    runs = {"baseline": dataclasses.replace(plan, window_batch=1),
            "batched": dataclasses.replace(plan, window_batch=opts.batch)}
    seconds, outputs, counts = {}, {}, {}
    with torch.no_grad():
        for name, run_plan in runs.items():
            runner = VolumeRunner(model, run_plan, "cpu", bf16=False)
            windows[0] = 0
            start = time.perf_counter()
            z = runner.encode(cond)
            image = runner.decode(z)
            seconds[name] = time.perf_counter() - start
            outputs[name] = (z, image)
            counts[name] = windows[0]
    assert counts["baseline"] == counts["batched"], counts
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs["baseline"], outputs["batched"]))
    print(f"{'':10s} {'seconds':>8s}")  # noqa: T201 - benchmark output
    for name, value in seconds.items():
        print(f"{name:10s} {value:8.1f}")  # noqa: T201
    print(f"windows={counts['batched']} baseline_s={seconds['baseline']:.2f} batched_s={seconds['batched']:.2f} "  # noqa: T201
          f"speedup={seconds['baseline'] / seconds['batched']:.2f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
