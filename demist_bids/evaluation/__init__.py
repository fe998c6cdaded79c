"""Evaluation as pure numbers: image and lesion metrics, paired statistics, the linear baseline.

No torch, no Nipype, no markup: the train level (:mod:`demist_bids.training.heldout`,
:mod:`demist_bids.training.external`) produces the predictions, these modules
measure them, and :mod:`demist_bids.reports.evaluation` draws the tables.
"""
