"""Errors that end a run, each carrying its BIDS execution-spec exit code.

Only :mod:`demist_bids.cli.run` turns these into process exit codes; library
code raises them with a one-line, user-facing message.
"""

from __future__ import annotations


class DemistError(Exception):
    """Base class: a failure the user can act on, with its exit code."""

    exit_code = 1


class BIDSValidationError(DemistError):
    """The input dataset is missing or is not valid BIDS."""

    exit_code = 16


class UnknownAnalysisLevelError(DemistError):
    """The analysis level is not participant, group or train."""

    exit_code = 17


class NothingSelectedError(DemistError):
    """Labels or filters selected no files."""

    exit_code = 18


class UsageError(DemistError):
    """The command line is inconsistent (for example output == input)."""

    exit_code = 64


class BadDataError(DemistError):
    """An input image cannot be used (corrupt header, wrong dimensionality...)."""

    exit_code = 65


class MissingInputError(DemistError):
    """A required input (T1w, FLAIR, PSR map, model weights) is absent."""

    exit_code = 66


class OutputNotWritableError(DemistError):
    """The output or work directory cannot be created or written."""

    exit_code = 73


class DemistIOError(DemistError):
    """Reading or writing failed part-way."""

    exit_code = 74


class TemporaryFailure(DemistError):
    """A failure worth retrying (for example CUDA out of memory)."""

    exit_code = 75


class Interrupted(TemporaryFailure):
    """SIGTERM or SIGINT stopped the run; what finished is in the work directory, so a rerun resumes."""
