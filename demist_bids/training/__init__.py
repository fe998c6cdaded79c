"""The ``train`` analysis level: cohort, cross-validation, stages, evaluation, model export.

Only :func:`run_train` is imported here, lazily, so importing the package costs
nothing until training starts.
"""

from __future__ import annotations


def run_train(config) -> int:
    """Run the ``train`` level described by ``config`` (see :mod:`.pipeline`); returns 0."""
    from demist_bids.training.pipeline import run_train as _run

    return _run(config)


__all__ = ["run_train"]
