"""Nipype's MultiProc, made to end cleanly when a worker dies or the run is stopped.

MultiProc hands each node to a ``ProcessPoolExecutor`` worker. Two faults used to
leave a participant run hanging or half-done:

- A worker that dies (killed by hand, by the kernel's out-of-memory killer) breaks
  the pool, but MultiProc's result callback swallows the ``BrokenProcessPool``, so
  the node it ran never finishes and the run polls forever. Here the node becomes
  a crash whose crash file names the signal that killed its worker, the nodes
  running beside it are abandoned (their crash files say why), nothing new starts,
  and :meth:`run` raises :class:`WorkerDied` (a ``RuntimeError``, as any node
  crash) within a poll or two; :class:`~demist_bids.exceptions.Interrupted` (75)
  if SIGTERM ended the worker (SLURM's scancel signals every process of a job).
- An exception in the main process (SIGTERM/SIGINT raise one, see
  :mod:`demist_bids.cli.run`) left the workers running their nodes, and Python's
  exit waited for them. Here the workers are terminated first. A node stopped
  half-way has no result in the work directory and runs again on a rerun; the
  commit's renames hold SIGTERM back (:func:`demist_bids.utils.atomic.commit_files`).

Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group: the
main process decides) and die on SIGTERM. A node that fails with a
:class:`~demist_bids.exceptions.DemistError` (a full disk during the commit: 74)
is kept in :attr:`SafeMultiProcPlugin.errors` with its exit code, and its
traceback goes to the crash file only, not the console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer, run_node

from demist_bids import exceptions

LOGGER = logging.getLogger("demist.participant")
_TASKS = None
"""In a worker: the queue on which it says which task it starts."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""A worker ended by one of these was asked to stop, as the run is: exit 75, not a crash."""
_ERROR_LINE = re.compile(r"^\s*demist_bids\.exceptions\.(\w+): (.+)$", re.MULTILINE)


class WorkerDied(RuntimeError):
    """A worker process died (signal, out of memory): its node crashed and the run stopped."""


def _initialize_worker(cwd: str, tasks) -> None:
    global _TASKS
    process_initializer(cwd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _TASKS = tasks


def _run_node(node, updatehash, taskid):
    """Nipype's ``run_node``, after telling the main process which worker runs ``taskid``."""
    _TASKS.put((taskid, os.getpid()))
    return run_node(node, updatehash, taskid)


def demist_error(traceback) -> exceptions.DemistError | None:
    """The :class:`DemistError` a node's traceback ends with (Nipype keeps only its text)."""
    text = "".join(traceback) if isinstance(traceback, list) else str(traceback or "")
    found = _ERROR_LINE.findall(text)
    kind = getattr(exceptions, found[-1][0], None) if found else None
    if not (isinstance(kind, type) and issubclass(kind, exceptions.DemistError)):
        return None
    return kind(found[-1][1].strip())


def _how_it_ended(exitcode) -> str:
    if exitcode is None:
        return "died"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name} (signal {-exitcode})"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class _CrashLogFilter(logging.Filter):
    """Keeps Nipype's 'Saving crash info' record (with its traceback) off the console."""

    def filter(self, record):
        return not record.getMessage().startswith("Saving crash info")


class SafeMultiProcPlugin(MultiProcPlugin):
    """MultiProc that stops within seconds, with a crash file, when a worker dies."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        self.pool.shutdown(wait=False)  # Nipype's pool has started no process yet: replace it
        import multiprocessing as mp

        context = mp.get_context(self.plugin_args.get("mp_context"))
        self._announced = context.SimpleQueue()
        self.pool = ProcessPoolExecutor(
            max_workers=self.processors, initializer=_initialize_worker,
            initargs=(self._cwd, self._announced), mp_context=context,
        )
        self._worker_of: dict[int, int] = {}
        self._node_of: dict[int, str] = {}
        self._lock = threading.Lock()
        self._death: str | None = None
        self._death_signal: int | None = None
        self._broken = False
        self.errors: list[exceptions.DemistError] = []
        """DemistErrors the nodes failed with, in the order they were reported."""

    # -- results -----------------------------------------------------------------------------
    def _async_callback(self, args):
        try:
            super()._async_callback(args)
        except BrokenProcessPool:
            taskid = next((t for t, f in list(self._task_obj.items()) if f is args), None)
            if taskid is not None:
                self._taskresult[taskid] = self._abandoned(taskid)

    def _abandoned(self, taskid: int) -> dict:
        """The result of a task lost with the pool: why, naming the dead worker's signal."""
        with self._lock:
            self._broken = True
            while not self._announced.empty():
                task, pid = self._announced.get()
                self._worker_of[task] = pid
            dead = self._dead_workers()
            pid = self._worker_of.get(taskid)
            node = self._node_of.get(taskid, f"task {taskid}")
            if pid in dead:
                why = f"the worker process (pid {pid}) running {node} {_how_it_ended(dead[pid])}"
                if dead[pid] == -signal.SIGKILL:
                    why += " (the kernel's out-of-memory killer sends SIGKILL)"
                if self._death is None:
                    self._death, self._death_signal = why, -dead[pid]
            else:
                cause = self._death or ("a worker process " + (
                    _how_it_ended(next(iter(dead.values()))) if dead else "died"))
                why = f"{node} was abandoned: {cause}"
        return {"result": None, "traceback": [why + "\n"], "taskid": taskid}

    def _dead_workers(self, wait: float = 3.0) -> dict[int, int]:
        """pid: exit code of the pool's dead workers.

        The pool notices a death when the worker's pipe closes, a moment before the
        kernel has its exit status: poll for it a little.
        """
        processes = dict(getattr(self.pool, "_processes", None) or {})
        deadline = time.monotonic() + wait
        while True:
            dead = {pid: p.exitcode for pid, p in processes.items() if p.exitcode not in (None, 0)}
            if dead or time.monotonic() > deadline:
                return dead
            time.sleep(0.02)

    def _report_crash(self, node, result=None):
        error = demist_error(result["traceback"]) if result else None
        if error is not None:
            self.errors.append(error)
        nipype_log = logging.getLogger("nipype.workflow")
        quiet = _CrashLogFilter()
        if error is not None:
            nipype_log.addFilter(quiet)
        try:
            crashfile = super()._report_crash(node, result=result)
        except OSError as exc:  # the crash folder is on the full or read-only output disk
            LOGGER.error("%s failed; its crash file could not be written: %s", node.fullname,
                         exc.strerror or exc)
            return None
        finally:
            nipype_log.removeFilter(quiet)
        if error is not None:
            LOGGER.error("%s failed: %s (crash file %s)", node.fullname, error, crashfile)
        return crashfile

    # -- scheduling --------------------------------------------------------------------------
    def _submit_job(self, node, updatehash=False):
        """As MultiProc's, with :func:`_run_node` and the future stored before its callback."""
        self._taskid += 1
        if getattr(node.interface, "terminal_output", "") == "stream":
            node.interface.terminal_output = "allatonce"
        self._node_of[self._taskid] = node.fullname
        future = self.pool.submit(_run_node, node, updatehash, self._taskid)
        self._task_obj[self._taskid] = future
        future.add_done_callback(self._async_callback)
        return self._taskid

    def _send_procs_to_workers(self, updatehash=False, graph=None):
        if not self._broken:
            try:
                return super()._send_procs_to_workers(updatehash=updatehash, graph=graph)
            except BrokenProcessPool:
                self._broken = True  # the running nodes' callbacks say why, in the next round
        if not self.pending_tasks:
            message = (f"{self._death or 'a worker process died'}; the run stops (rerun the "
                       "same command to resume from the work directory)")
            if self._death_signal in STOP_SIGNALS:  # scancel signals every process of the job
                raise exceptions.Interrupted(message)
            raise WorkerDied(message)

    def run(self, graph, config, updatehash=False):
        try:
            return super().run(graph, config, updatehash=updatehash)
        except BaseException:
            self._stop_workers()
            raise

    def _stop_workers(self, grace: float = 10.0) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after ``grace`` s) and close the pool."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        for process in processes:
            with contextlib.suppress(OSError, ValueError):
                process.terminate()
        for process in processes:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                process.join(grace)
                if process.is_alive():
                    process.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
