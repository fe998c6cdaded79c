"""The one device resolver: what ``--device auto|cpu|cuda[:N]`` means everywhere.

The participant level, the train level, the Python API, the sampler and the
benchmarks all call :func:`resolve_device`, so a run's sidecars and its
boilerplate name the device that actually ran.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("demist.device")


def resolve_device(requested: str) -> str:
    """``auto`` picks CUDA when a GPU is visible, else the CPU; CUDA asked for without one is an error.

    Raises:
        UsageError: ``cuda`` (or ``cuda:N``) was requested and no CUDA device is visible (exit 64).
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if requested.startswith("cuda") and not has_cuda:
        from demist_bids.exceptions import UsageError

        raise UsageError(f"--device {requested} was requested but no CUDA device is visible")
    if requested == "auto":
        requested = "cuda" if has_cuda else "cpu"
        if not has_cuda:
            LOGGER.info("no GPU found: synthesis runs on the CPU")
    return requested


def describe_device(device: str) -> str:
    """``cpu``, or ``cuda (<GPU name>)`` when a GPU was used."""
    if not device.startswith("cuda"):
        return device
    try:
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    except Exception:  # the name is a courtesy; never fail a run over it
        return device
