"""The measured-PSR stand-in: a plausible function of tissue, myelin and lesions.

qMT pool-size ratio (PSR, unitless) tracks myelin: about 0.15-0.20 in white
matter, 0.06-0.09 in grey matter and about 0 in CSF at 3 T. The phantom's PSR
is built from the *underlying* state, never from the T1w/FLAIR intensities:

    PSR = m(x) * (1 + k * texture) * (f_WM * PSR_WM * (1 - L) + f_GM * PSR_GM * (1 - L/2))
          + f_CSF * PSR_CSF

- ``f_*``: the subject's tissue fractions (partial volume at every boundary);
- ``PSR_WM``, ``PSR_GM``: the subject's global levels. Controls draw NAWM PSR
  from N(0.185, 0.007); patients lose 2-10 %, more with higher lesion load
  (diffuse normal-appearing-WM damage), grey matter less;
- ``m(x)``: a smooth within-subject myelin field (+-5 %), shared only partly
  with the T1w contrast, so it is only partly visible to a synthesis model;
- ``texture``: the template T1 contrast unexplained by tissue class (deep
  nuclei, tracts), also present in the T1w;
- ``L``: the lesion PSR loss with its graded rim and perilesional halo.

The "measurement" then adds Gaussian noise (sigma 0.004) and a slight blur, as
from a lower-resolution qMT acquisition registered to the T1w, and is masked to
the brain like a qMT pipeline's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .anatomy import SubjectAnatomy
from .fields import smooth_field

PSR_CSF = 0.003
TEXTURE_GAIN = 1.5
NOISE_SIGMA = 0.004


@dataclass(frozen=True)
class MyelinState:
    """A subject's myelin: global WM/GM PSR levels and a smooth relative field."""

    wm_psr: float
    gm_psr: float
    field: np.ndarray  # about 1, +-5 %


def draw_myelin(
    shape: tuple[int, int, int], rng: np.random.Generator, *, patient: bool, lesion_load: float
) -> MyelinState:
    """Draw global levels and the within-subject field (``lesion_load`` in mL)."""
    wm_psr = rng.normal(0.185, 0.007)
    gm_psr = rng.normal(0.076, 0.004)
    if patient:
        diffuse = rng.uniform(0.02, 0.05) + 0.02 * min(lesion_load / 10.0, 2.5)
        wm_psr *= 1.0 - diffuse
        gm_psr *= 1.0 - 0.5 * diffuse
    field = 1.0 + 0.05 * smooth_field(shape, rng, max_cycles=2.5, n_terms=10)
    return MyelinState(float(wm_psr), float(gm_psr), field.astype(np.float32))


def measured_psr(
    anatomy: SubjectAnatomy, myelin: MyelinState, rng: np.random.Generator
) -> np.ndarray:
    """The PSR map as a qMT acquisition would deliver it on the T1w grid (float32)."""
    tissue, loss = anatomy.tissue, anatomy.lesion["psr_loss"]
    modulation = myelin.field * (1.0 + TEXTURE_GAIN * anatomy.texture)
    psr = (
        modulation
        * (
            tissue["wm"] * myelin.wm_psr * (1.0 - loss)
            + tissue["gm"] * myelin.gm_psr * (1.0 - 0.5 * loss)
        )
        + tissue["csf"] * PSR_CSF
    )
    psr = psr + rng.normal(0.0, NOISE_SIGMA, size=psr.shape).astype(np.float32)
    psr = ndi.gaussian_filter(psr, sigma=0.5)
    psr[~anatomy.brain_mask] = 0.0
    return np.clip(psr, 0.0, None).astype(np.float32)
