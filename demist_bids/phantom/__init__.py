"""demist-phantom: a synthetic multiple-sclerosis cohort as a BIDS dataset.

Realistic enough that preprocessing and synthesis have real work to do, and
fully known, so that everything can be scored against the truth:

- anatomy: nilearn's MNI152 2009a tissue maps, shrunk by ``scale`` and deformed
  differently per subject (:mod:`.template`, :mod:`.warp`), with a skull and
  scalp shell (:mod:`.anatomy`);
- MS lesions, periventricular, juxtacortical and deep (:mod:`.lesions`);
- T1w and FLAIR contrast (:mod:`.contrast`) and their acquisitions with bias,
  Rician noise, thick FLAIR slices, another FLAIR orientation, field of view and
  head position (:mod:`.acquisition`, :mod:`.fields`);
- measured-PSR stand-ins from tissue, myelin and lesion state (:mod:`.psr`);
- the BIDS dataset with derivatives (:mod:`.cohort`, :mod:`.bids_files`) and
  the ``demist-phantom`` command (:mod:`.cli`).

Use :func:`generate_cohort` from Python. Importing this package is cheap: the
numerical modules load on first use.
"""

from __future__ import annotations

__all__ = ["generate_cohort", "PhantomScan"]


def __getattr__(name: str):
    if name in __all__:
        from . import cohort

        return getattr(cohort, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
