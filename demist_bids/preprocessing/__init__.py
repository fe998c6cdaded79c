"""Pure numpy/nibabel/SimpleITK steps of the anatomical preprocessing.

No Nipype and no torch here: :mod:`demist_bids.interfaces` wraps these
functions for the workflow, and the command line calls :func:`check_image`
before it builds anything. SimpleITK, scipy and scikit-learn load inside the
functions that need them.
"""

from .grids import resample_to_native
from .validation import MIN_FLAIR_COVERAGE, check_image, check_pair, load_validated

__all__ = [
    "MIN_FLAIR_COVERAGE", "check_image", "check_pair", "load_validated", "resample_to_native",
]
