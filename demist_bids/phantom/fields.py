"""Smooth random fields and MR noise for the phantom.

Every spatially varying nuisance or biological effect in the phantom (the
deformation that makes each subject's anatomy different, receive-coil bias
fields, within-subject myelin variation, skull-thickness variation) is a smooth
random field. We build them as short sums of separable low-frequency cosines:
each term is the outer product of three 1-D cosines, so a field over a whole
volume costs a few multiply-adds per voxel, is infinitely smooth, has no edge
artefacts, and depends only on the generator state, which makes the phantom
deterministic for a seed.
"""

from __future__ import annotations

import numpy as np


def smooth_field(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    max_cycles: float = 2.0,
    n_terms: int = 10,
) -> np.ndarray:
    """A zero-mean, unit-variance smooth random field over a grid (float32).

    ``max_cycles`` bounds the number of oscillations across each axis of the
    grid, so the field's smoothness is relative to the field of view and does
    not change with the phantom's scale.
    """
    field = np.zeros(shape, dtype=np.float32)
    amplitudes = rng.normal(size=n_terms)
    for amplitude in amplitudes:
        profiles = []
        for n in shape:
            cycles = rng.uniform(0.0, max_cycles)
            phase = rng.uniform(0.0, 2.0 * np.pi)
            t = (np.arange(n, dtype=np.float32) + 0.5) / n
            profiles.append(np.cos(2.0 * np.pi * cycles * t + phase).astype(np.float32))
        field += np.float32(amplitude) * (
            profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
        )
    # Each term is a product of three random-phase cosines: variance a**2 / 8.
    field /= np.float32(np.sqrt(np.sum(amplitudes**2) / 8.0))
    return field


def bias_field(
    shape: tuple[int, int, int], rng: np.random.Generator, *, strength: float
) -> np.ndarray:
    """A positive multiplicative receive-bias field, ``exp(strength * smooth)``."""
    return np.exp(np.float32(strength) * smooth_field(shape, rng, max_cycles=1.2, n_terms=6))


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise: Rician-distributed.

    Background (zero signal) becomes Rayleigh noise, as in real magnitude images.
    """
    real = signal + rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, size=signal.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)
