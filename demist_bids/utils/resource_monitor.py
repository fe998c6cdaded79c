"""``--resource-monitor``: Nipype's resource monitor, summarised in the run's logs.

Nipype samples each node's process tree (psutil) while it runs and stores the
peak memory and CPU use in the node's result (and, itself, writes
``resource_monitor.json`` into the work directory's graph folder). A status
callback, Nipype's ``log_nodes_cb`` with the node's full name (so two subjects'
``synthesize`` nodes stay apart), writes one JSON line per finished node to
``OUT/logs/resources-<run>.jsonl``; once the graph has run, demist writes one
row per node to ``OUT/logs/resources-<run>.tsv`` and logs the heaviest nodes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

LOGGER = logging.getLogger("demist.resources")
CALLBACK_LOGGER = "callback"
"""The logger ``nipype.utils.profiler.log_nodes_cb`` writes to."""
COLUMNS = ("node", "start", "finish", "duration_s", "peak_memory_gb", "cpu_percent",
           "estimated_memory_gb", "n_procs")
UNSUPPORTED_PLUGINS = ("SLURMGraph", "SGEGraph", "PBSGraph", "LSFGraph", "CondorDAGMan")
"""Plugins that submit the graph at once, where Nipype offers no status callback."""


def set_nipype_monitoring(enabled: bool) -> None:
    """Switch Nipype's resource monitor on or off for this process (and the workers it forks)."""
    from nipype import config as nipype_config

    nipype_config.update_config({"monitoring": {
        "enabled": enabled, "sample_frequency": "0.5", "summary_append": True}})
    nipype_config.resource_monitor = enabled  # the cached switch every interface reads


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Work from ``folder``: Nipype's monitor leaves its ``.proc-*`` sample files in the process's
    current directory, which must be the work directory, not the user's."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def node_log(path: Path, plugin_args: dict, plugin: str, work_dir: Path) -> Iterator[Path | None]:
    """Route Nipype's per-node records to ``path`` (JSON lines) while the graph runs.

    Adds ``status_callback`` to ``plugin_args``; yields None (and logs why) for the
    graph-submission plugins, which have no callback. The process works from
    ``work_dir`` meanwhile (every path demist hands Nipype is absolute).
    """
    if plugin in UNSUPPORTED_PLUGINS:
        LOGGER.warning("--resource-monitor: the %s plugin reports no per-node records; "
                       "see the memory columns of the nodes' reports in the work directory", plugin)
        with _inside(work_dir):
            yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(CALLBACK_LOGGER)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    plugin_args["status_callback"] = log_node
    try:
        with _inside(work_dir):
            yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def log_node(node, status: str) -> None:
    """Nipype status callback: ``log_nodes_cb``'s record, named by the node's full name."""
    if status != "end":
        return
    runtime = node.result.runtime
    record = {
        "name": node.name,
        "id": getattr(node, "fullname", node._id),
        "start": runtime.startTime,
        "finish": runtime.endTime,
        "duration": runtime.duration,
        "runtime_threads": getattr(runtime, "cpu_percent", "N/A"),
        "runtime_memory_gb": getattr(runtime, "mem_peak_gb", "N/A"),
        "estimated_memory_gb": node.mem_gb,
        "num_threads": node.n_procs,
    }
    logging.getLogger(CALLBACK_LOGGER).debug(json.dumps(record, default=str))


def _number(value, digits: int = 3) -> float | None:
    try:
        return round(float(value), digits)
    except (TypeError, ValueError):
        return None


def summarise(jsonl: Path, tsv: Path) -> list[dict]:
    """Write ``tsv`` (one row per node, slowest first) from the JSON lines; return the rows."""
    rows = []
    for line in Path(jsonl).read_text().splitlines() if Path(jsonl).is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows.append({
            "node": record.get("id") or record.get("name"),
            "start": record.get("start"),
            "finish": record.get("finish"),
            "duration_s": _number(record.get("duration")),
            "peak_memory_gb": _number(record.get("runtime_memory_gb")),
            "cpu_percent": _number(record.get("runtime_threads")),
            "estimated_memory_gb": _number(record.get("estimated_memory_gb")),
            "n_procs": record.get("num_threads"),
        })
    rows.sort(key=lambda r: -(r["duration_s"] or 0.0))
    tsv.parent.mkdir(parents=True, exist_ok=True)
    with open(tsv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "n/a" if v is None else v for k, v in row.items()})
    measured = [r for r in rows if r["peak_memory_gb"] is not None]
    if measured:
        peak = max(measured, key=lambda r: r["peak_memory_gb"])
        LOGGER.info("resource monitor: %d nodes; peak memory %.2f GB (%s); slowest %s (%.0f s); "
                    "table: %s", len(rows), peak["peak_memory_gb"], peak["node"], rows[0]["node"],
                    rows[0]["duration_s"] or 0.0, tsv)
    else:
        LOGGER.warning("resource monitor: no node recorded its memory use (is psutil installed?); "
                       "table: %s", tsv)
    return rows
