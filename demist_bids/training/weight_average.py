"""An exponential moving average of the weights a stage trains, used in place of its last iterate.

Diffusion trainers (DDPM, LDM, EDM2) sample from averaged weights rather than the last
optimisation step's. Here it has a measured reason to matter: with batches of 4 patches, one
run's pure-noise PSNR moved by 3.5 dB with the seed of its data draws alone, its initial weights
fixed (benchmarks/README, session 20), and an average over many steps' weights depends less on
any few batches.

The decay warms up with the number of updates n, ``min(decay, 1 - (1 + n) ** -0.75)``, so the
average never holds the zero-initialised joins of the first steps for long: at the end of a
1250-step stage it is 0.995, an average over roughly the last quarter of the steps. The average
is a module of buffers, so the engine checkpoints and resumes it with the weights it follows.
"""

from __future__ import annotations

import torch
from torch import nn

WARMUP_POWER = 0.75


class WeightAverage(nn.Module):
    """The running average of ``parameters``; :meth:`update` after each step, :meth:`copy_to` at the end."""

    def __init__(self, parameters, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"a weight average's decay lies strictly between 0 and 1, not {decay}")
        self.decay = decay
        self._followed = list(parameters)  # a plain list: the average owns no parameters
        for index, parameter in enumerate(self._followed):
            self.register_buffer(f"average_{index}", parameter.detach().clone())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def _averages(self) -> list[torch.Tensor]:
        return [getattr(self, f"average_{index}") for index in range(len(self._followed))]

    def current_decay(self) -> float:
        """The decay the next update applies (0 at the first: the average starts at that step's weights)."""
        return min(self.decay, 1.0 - (1.0 + int(self.updates)) ** -WARMUP_POWER)

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for average, parameter in zip(self._averages(), self._followed):
            average.lerp_(parameter.detach(), weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self) -> None:
        """Write the average into the parameters it follows."""
        for average, parameter in zip(self._averages(), self._followed):
            parameter.copy_(average)
