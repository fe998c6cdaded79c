"""``demist`` entry point: the only place where errors become exit codes.

Order of work, so that a run that fails early leaves nothing behind but its log:
1. parse and check the command line (nothing is written);
2. make sure the output directory can be written (73), start the log file in
   ``OUTPUT_DIR/logs/`` and save the run's configuration there;
3. hand over to the analysis level (participant, group, train).

``demist-synth`` (:mod:`demist_bids.cli.synth`) ends here too, with the same codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from demist_bids.exceptions import DemistError, Interrupted, OutputNotWritableError

LOGGER = logging.getLogger("demist")


def _configure_console(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)  # INFO by default, DEBUG with -v
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    root = logging.getLogger("demist")
    for old in root.handlers:  # an earlier run in this process (demist-demo runs two)
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(min(level, logging.INFO))
    handler.setLevel(level)
    root.propagate = False


def prepare_output(config) -> Path:
    """Create ``OUTPUT_DIR/logs``, start the log file there, save the config; return the log path.

    Raises:
        OutputNotWritableError: the directory cannot be created or written (73).
    """
    out = Path(config.execution.output_dir)
    logs = out / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        if not os.access(logs, os.W_OK):
            raise PermissionError(f"{logs} is not writable")
    except OSError as exc:
        raise OutputNotWritableError(f"cannot write to the output directory {out}: {exc}") from exc
    run_uuid = config.execution.run_uuid
    log_file = logs / f"demist-{config.execution.analysis_level}-{run_uuid}.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s [%(levelname)s] %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("demist").addHandler(handler)
    config.to_filename(logs / f"config-{run_uuid}.toml")
    return log_file


def clean_work_dir(work_dir: Path) -> None:
    """``--clean-workdir``: remove the work directory's contents, as fMRIPrep does.

    The parser has already refused a work directory holding the input or the output.
    """
    import shutil

    if not work_dir.is_dir():
        return
    LOGGER.info("clearing the work directory %s (--clean-workdir)", work_dir)
    left = []
    for entry in work_dir.iterdir():
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            left.append(f"{entry.name} ({exc.strerror})")
    if left:
        LOGGER.warning("could not clear all of the work directory %s: %s", work_dir,
                       ", ".join(left))


def _note_participant_only_options(config) -> None:
    """Say so when an option that only concerns the participant level's graph is given elsewhere."""
    level = config.execution.analysis_level
    if level == "participant":
        return
    given = [flag for flag, on in (("--write-graph", config.execution.write_graph),
                                   ("--resource-monitor", config.nipype.resource_monitor),
                                   ("--reports-only", config.execution.reports_only)) if on]
    if given:
        LOGGER.warning("%s: only the participant level uses %s; the %s level runs as usual",
                       " ".join(given), "them" if len(given) > 1 else "it", level)


def _dispatch(config) -> int:
    level = config.execution.analysis_level
    if level == "participant":
        from demist_bids.cli.participant import run_participant

        return run_participant(config)
    if level == "group":
        from demist_bids.cli.group import run_group

        return run_group(config)
    from demist_bids.training import run_train

    return run_train(config)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM (SLURM's scancel or time limit) and SIGINT (Ctrl-C) raise :class:`Interrupted` (75).

    The exception unwinds the run: the participant level's workers are terminated
    (:mod:`demist_bids.workflows.multiproc`), half-written files are removed on the
    way out, and what finished stays cached in the work directory. A second signal
    while stopping is only logged, so the clean-up is not cut short.
    """
    stopping = []

    def stop(signum, _frame):
        name = signal.Signals(signum).name
        if stopping:
            LOGGER.warning("%s received; already stopping", name)
            return
        stopping.append(name)
        raise Interrupted(f"stopped by {name}; what finished is kept in the work directory: "
                          "run the same command again to resume")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _guarded(prog: str, work: Callable[[], int]) -> int:
    """Run ``work``; a :class:`DemistError` becomes its exit code with a one-line message."""
    try:
        with _stop_on_signals():
            return work()
    except DemistError as exc:
        LOGGER.error("%s: error: %s", prog, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        LOGGER.error("%s: interrupted", prog)
        return 130


def run(argv: list[str] | None = None) -> int:
    """Run demist and return the exit status (BIDS execution-spec codes)."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    _configure_console(0)
    from demist_bids.cli.parser import parse_args

    def work() -> int:
        config = parse_args(argv)
        config.execution.cmdline = shlex.join(["demist", *(sys.argv[1:] if argv is None else argv)])
        _configure_console(config.execution.verbosity)
        log_file = prepare_output(config)
        LOGGER.info("demist %s level, run %s; log: %s",
                    config.execution.analysis_level, config.execution.run_uuid, log_file)
        if config.execution.config_file is not None:
            LOGGER.info("settings from %s, overridden by the command line",
                        config.execution.config_file)
        if config.execution.clean_workdir:
            clean_work_dir(Path(config.execution.work_dir))
        _note_participant_only_options(config)
        return _dispatch(config)

    return _guarded("demist", work)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


def synth(argv: list[str] | None = None) -> int:
    """Run ``demist-synth`` (:mod:`demist_bids.cli.synth`) and return its exit status."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    _configure_console(0)
    from demist_bids.cli.synth import build_parser, run_synth

    def work() -> int:
        args = build_parser().parse_args(argv)
        _configure_console(args.verbose)
        return run_synth(args)

    return _guarded("demist-synth", work)


def main_synth(argv: list[str] | None = None) -> None:
    """``demist-synth`` console-script entry point."""
    sys.exit(synth(argv))
