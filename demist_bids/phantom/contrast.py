"""T1w (MPRAGE) and FLAIR signal of a subject's anatomy, before acquisition.

Each voxel's signal is the partial-volume mix of its tissues' signals (relative
to white matter on T1w), jittered a few percent per subject and session:

=========== ===== =====
tissue      T1w   FLAIR
=========== ===== =====
WM          1.00  0.52
GM          0.62  0.72
CSF         0.16  0.05
bone        0.04  0.03
diploe      0.70  0.45
scalp       0.80  0.65
=========== ===== =====

So T1w has WM > GM > CSF and FLAIR GM > WM with dark CSF. In lesions the
white-matter signal darkens on T1w by the lesion's ``t1_loss`` and brightens on
FLAIR by ``1.5 * flair_gain`` (lesion/NAWM 1.9-2.5, brighter than cortex). White-matter T1w also
follows part (40 %) of the subject's myelin field and the template texture, so
T1w carries some, not all, of the information in the PSR map.
"""

from __future__ import annotations

import numpy as np

from .anatomy import SubjectAnatomy
from .psr import MyelinState

T1W_SIGNAL = {
    "wm": 1.0,
    "gm": 0.62,
    "csf": 0.16,
    "csf_rim": 0.16,
    "inner_table": 0.04,
    "diploe": 0.70,
    "outer_table": 0.04,
    "scalp": 0.80,
}
FLAIR_SIGNAL = {
    "wm": 0.52,
    "gm": 0.72,
    "csf": 0.05,
    "csf_rim": 0.05,
    "inner_table": 0.03,
    "diploe": 0.45,
    "outer_table": 0.03,
    "scalp": 0.65,
}
MYELIN_COUPLING_T1W = 0.4
FLAIR_LESION_GAIN = 1.5


def _jittered(signal: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    return {name: value * float(rng.uniform(0.95, 1.05)) for name, value in signal.items()}


def _mix(anatomy: SubjectAnatomy, signal: dict[str, float], wm_signal: np.ndarray) -> np.ndarray:
    image = wm_signal * anatomy.tissue["wm"]
    for name, value in signal.items():
        if name != "wm":
            image += np.float32(value) * anatomy.tissue[name]
    return image


def t1w_signal(
    anatomy: SubjectAnatomy, myelin: MyelinState, rng: np.random.Generator
) -> np.ndarray:
    """Noise-free MPRAGE signal on the T1w grid (WM about 1)."""
    signal = _jittered(T1W_SIGNAL, rng)
    myelin_term = 1.0 + MYELIN_COUPLING_T1W * (myelin.field - 1.0)
    wm = np.float32(signal["wm"]) * myelin_term * (1.0 - anatomy.lesion["t1_loss"])
    image = _mix(anatomy, signal, wm)
    image += anatomy.texture * (anatomy.tissue["gm"] + anatomy.tissue["wm"])
    return np.clip(image, 0.0, None)


def flair_signal(anatomy: SubjectAnatomy, rng: np.random.Generator) -> np.ndarray:
    """Noise-free FLAIR signal on the T1w grid, before the FLAIR acquisition geometry."""
    signal = _jittered(FLAIR_SIGNAL, rng)
    wm = np.float32(signal["wm"]) * (1.0 + FLAIR_LESION_GAIN * anatomy.lesion["flair_gain"])
    image = _mix(anatomy, signal, wm)
    image -= 0.5 * anatomy.texture * (anatomy.tissue["gm"] + anatomy.tissue["wm"])
    return np.clip(image, 0.0, None)
