"""Training checkpoints: save every epoch, on SIGTERM, and resume from them.

A checkpoint holds the state of everything a stage trains (module and optimizer
state dicts), the step it reached and the random-number-generator states, so a
resumed run continues the same trajectory. Files are written atomically, so a
kill during a save leaves the previous checkpoint intact: at most the current
epoch is lost. Tensors and plain Python values only; loading uses
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

SIGTERM (SLURM preemption, time limit, ``scancel``) only raises a flag; the
training loop checks it between steps, agrees with the other ranks to stop at
the same step, saves, and raises :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import logging
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demist_bids.exceptions import TemporaryFailure
from demist_bids.utils.atomic import atomic_path

LOGGER = logging.getLogger("demist.train")
CHECKPOINT_NAME = "checkpoint.pt"


class TrainingInterrupted(TemporaryFailure):
    """SIGTERM stopped training after a checkpoint was saved; rerun with --resume."""


@dataclass
class TerminationFlag:
    """Set by SIGTERM/SIGINT handlers; polled by the training loops."""

    requested: bool = False
    signal_name: str = ""
    _previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> TerminationFlag:
        """Handle SIGTERM (and SIGUSR1, which SLURM can send before the time limit)."""
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                LOGGER.debug("Cannot install a %s handler outside the main thread", sig)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        LOGGER.warning("%s received: saving a checkpoint after the current step", self.signal_name)


def rng_state() -> dict[str, Any]:
    """Random states of torch, numpy and Python, as checkpoint-safe values."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype("int64")),
        "numpy_pos": int(np_state[2]),
        "python": repr(random.getstate()),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    import ast

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype("uint32")
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    version, internal, gauss = ast.literal_eval(state["python"])
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus RNG states) atomically to ``directory/checkpoint.pt``."""
    import torch

    path = Path(directory) / CHECKPOINT_NAME
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({**payload, "rng": rng_state()}, tmp)
    LOGGER.debug("Checkpoint written: %s (step %s)", path, payload.get("step"))
    return path


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """Return the checkpoint in ``directory``, or None when there is none."""
    import torch

    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
