"""Fixtures shared by the command-line tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def errors(caplog, monkeypatch):
    """The ERROR lines of the run (the 'demist' logger made visible to caplog)."""
    import demist_bids.cli.run as run_module

    original = run_module._configure_console

    def configure(verbosity):
        original(verbosity)
        logging.getLogger("demist").propagate = True

    monkeypatch.setattr(run_module, "_configure_console", configure)
    caplog.set_level(logging.INFO, logger="demist")
    return lambda: "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
