"""Where the time of a participant run goes: each Nipype node, and each network pass of the synthesis.

Usage::

    python benchmarks/participant_profile.py                      # ../shared/data/openms_subset, else a phantom
    python benchmarks/participant_profile.py --bids DIR [--participant-label X ...] [--model DIR] [--work DIR]
    python benchmarks/participant_profile.py --phantom --phantom-scale 0.35   # a fresh demist-phantom subject

It runs the participant level in this process (``demist BIDS OUT participant``,
the same code path and Nipype plugin as the console script) on a fresh work
directory and then reports:

- every Nipype node's wall time, read from the ``result_<node>.pklz`` file
  Nipype writes into the node's work folder (``runtime.duration``; it is there
  for every plugin and needs no ``--resource-monitor``), its share of the
  summed time, the time the graph spent between nodes (scheduling, worker
  start-up) and the time outside the graph (checks, validation, reports);
- inside each ``synthesize`` node, each network pass: the conditioning
  encoder, every denoising step (UNet + streams, and the backbone alone when
  classifier-free guidance is on), the PSR decoder, with the number of
  network calls and windows and their seconds; the rest of the node (model
  loading, image I/O) is what is left of its wall time;
- the known levers: the cropping box (``synthesis.json``), the autoencoder
  windows and their overlap (``SamplingConfig.autoencoder_overlap``), and how
  many windows other overlaps would need on the same box.

The passes are timed by wrapping ``VolumeRunner.encode/noise/decode`` and
``DemistModel.predict_noise/backbone_noise`` in this process before the graph
runs (and a forward hook on the ControlNet); Nipype's MultiProc workers are
forked from it, so they inherit the wrappers and append their records to a
file in the work directory. Nothing in ``demist_bids`` is changed. The last
line is::

    total_s=<x> preprocessing_s=<x> synthesis_s=<x> per_scan_s=<x>

total_s is the wall time of the whole participant level; preprocessing_s the
summed time of the ``anat_preproc_wf`` nodes, synthesis_s of the ``synthesize``
nodes (sums: nodes that ran side by side count fully); per_scan_s = total_s /
scans.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads on shared CPUs
os.environ.setdefault("NIPYPE_NO_ET", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

OPENMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "openms_subset"
"""The real scans of ``../shared/data`` (see its README): the default input."""
PREPROCESSING = "anat_preproc_wf"
SYNTHESIS = "synthesize"
WHAT_IF_OVERLAPS = (0.5, 0.25, 0.0)


def build_parser() -> argparse.ArgumentParser:
    """The command line (no heavy imports: tests read its defaults)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bids", type=Path, default=None,
                        help=f"BIDS dataset (default: {OPENMS} when present, else a fresh phantom)")
    parser.add_argument("--participant-label", nargs="+", default=None, help="subjects (default: all)")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the embedded demo)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the run's work/output folders (cleared) and a cached phantom "
                             "(default: a temporary folder, removed)")
    parser.add_argument("--nprocs", type=int, default=0, help="demist --nprocs (default: demist's, all cores)")
    parser.add_argument("--omp-nthreads", type=int, default=0, help="demist --omp-nthreads (default: demist's)")
    parser.add_argument("--phantom", action="store_true", help="profile a fresh demist-phantom cohort")
    parser.add_argument("--phantom-subjects", type=int, default=1)
    parser.add_argument("--phantom-seed", type=int, default=11)
    parser.add_argument("--phantom-scale", type=float, default=0.6)
    parser.add_argument("--poll-sleep", type=float, default=None,
                        help="Nipype's execution.poll_sleep_duration for this run (default: demist's, 0.1 s; Nipype's is 2 s): "
                             "how often the scheduler looks for finished nodes")
    parser.add_argument("--demist-args", default="",
                        help="more arguments for demist, one string (e.g. '--steps 20 --sampler ddim')")
    return parser


# -- the network passes, timed inside the synthesis node ---------------------------------------------
class PassRecorder:
    """Wraps the sampler's passes with timers; every process appends JSON lines to ``path``."""

    RUNNER = {"encode": "encoder", "noise": "step", "decode": "decoder"}
    MODEL = {"predict_noise": "unet_streams", "backbone_noise": "unet_unconditional"}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = ""
        """The runner pass under way (a window belongs to it)."""
        self._undo: list[tuple[type, str, object]] = []

    def _write(self, record: dict) -> None:
        record.setdefault("node_dir", os.getcwd())  # Nipype runs a node inside its folder
        record["pid"] = os.getpid()
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _wrap(self, cls: type, name: str, kind: str) -> None:
        original = getattr(cls, name)
        recorder = self

        @functools.wraps(original)
        def timed(self, *args, **kwargs):
            if kind == "step":
                recorder._hook_controlnet(self.model)
            if name in recorder.RUNNER:
                recorder.current = kind
            start, cpu = time.perf_counter(), time.process_time()
            try:
                out = original(self, *args, **kwargs)
            finally:
                if name in recorder.RUNNER:
                    recorder.current = ""
            _synchronize(out)
            record = {"pass": kind, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                      "batch": int(args[0].shape[0])}
            if kind == "step":
                record["t"] = int(args[1].reshape(-1)[0])
            recorder._write(record)
            return out

        self._undo.append((cls, name, original))
        setattr(cls, name, timed)

    def _hook_controlnet(self, model) -> None:
        net = getattr(model, "controlnet", None)
        if net is None or getattr(net, "_profile_hooked", False):
            return
        starts: list[tuple[float, float]] = []
        net.register_forward_pre_hook(lambda module, inputs: starts.append((time.perf_counter(),
                                                                             time.process_time())))

        def done(module, inputs, output):
            _synchronize(output)
            start, cpu = starts.pop()
            self._write({"pass": "controlnet", "seconds": time.perf_counter() - start,
                         "cpu": time.process_time() - cpu, "batch": int(inputs[0].shape[0])})

        net.register_forward_hook(done)
        net._profile_hooked = True

    def _wrap_windows(self, sampler_module) -> None:
        """Count the autoencoder windows: each predictor call of MONAI's sliding window is a batch."""
        original = sampler_module._windowed
        recorder = self

        @functools.wraps(original)
        def counted(predictor, inputs, roi, overlap, batch, *rest):
            def counting(window):
                recorder._write({"pass": "window", "in": recorder.current, "roi": list(roi),
                                 "overlap": overlap, "batch": int(window.shape[0]), "seconds": 0.0})
                return predictor(window)

            return original(counting, inputs, roi, overlap, batch, *rest)

        self._undo.append((sampler_module, "_windowed", original))
        sampler_module._windowed = counted

    def _wrap_nodes(self) -> None:
        """CPU seconds of every node (all its threads), measured in the worker that runs it."""
        from nipype.pipeline.engine.nodes import Node

        original = Node.run
        recorder = self

        @functools.wraps(original)
        def measured(node, *args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return original(node, *args, **kwargs)
            finally:
                recorder._write({"pass": "node", "node_dir": str(Path(node.output_dir()).resolve()),
                                 "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu})

        self._undo.append((Node, "run", original))
        Node.run = measured

    def __enter__(self) -> "PassRecorder":
        from demist_bids.inference import sampler
        from demist_bids.models.demist import DemistModel

        for name, kind in self.RUNNER.items():
            self._wrap(sampler.VolumeRunner, name, kind)
        for name, kind in self.MODEL.items():
            self._wrap(DemistModel, name, kind)
        self._wrap_windows(sampler)
        self._wrap_nodes()
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def _synchronize(out) -> None:
    """Wait for CUDA work so a pass's time is its own (CPU ops are synchronous)."""
    import torch

    tensor = out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(tensor, torch.Tensor) and tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)


# -- the Nipype nodes --------------------------------------------------------------------------------
@dataclass
class NodeTime:
    name: str
    """Path of the node below the top workflow (``single_subject_sub_01_wf/.../n4_t1w``)."""
    seconds: float
    start: float
    end: float
    folder: Path

    @property
    def stage(self) -> str:
        if self.name.rsplit("/", 1)[-1] == SYNTHESIS:
            return "synthesis"
        return "preprocessing" if f"/{PREPROCESSING}/" in f"/{self.name}/" else "outputs"


def _timestamp(value) -> float:
    return dt.datetime.fromisoformat(str(value)).timestamp()


def node_times(graph_dir: Path, since: float) -> tuple[list[NodeTime], list[str]]:
    """Every node that ran after ``since`` (epoch seconds) under ``graph_dir``; and the cached ones."""
    from nipype.utils.filemanip import loadpkl

    nodes, cached = [], []
    for result in sorted(graph_dir.rglob("result_*.pklz")):
        if "mapflow" in result.parts:  # a MapNode's parts: its own result holds them all
            continue
        runtime = loadpkl(result).runtime
        parts = runtime if isinstance(runtime, list) else [runtime]
        starts = [_timestamp(p.startTime) for p in parts]
        name = str(result.parent.relative_to(graph_dir))
        if min(starts) < since - 1:
            cached.append(name)
            continue
        nodes.append(NodeTime(name, sum(float(p.duration) for p in parts), min(starts),
                              max(_timestamp(p.endTime) for p in parts), result.parent))
    return nodes, cached


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def window_count(shape, roi, overlap: float) -> int:
    """Windows MONAI's sliding window takes over ``shape`` with ``roi`` at ``overlap``."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    roi = [min(r, s) for r, s in zip(roi, shape)]
    interval = _get_scan_interval(shape, roi, len(shape), (overlap,) * len(shape))
    return len(dense_patch_slices(shape, roi, interval))


# -- running demist ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _stdout_to_stderr():
    """Nipype's and demist's logging go to stderr while the graph runs (forked workers too):
    stdout keeps only the tables and the last line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _choose_input(args, work: Path) -> tuple[Path, str]:
    if args.bids is not None:
        return args.bids.resolve(), f"BIDS dataset {args.bids}"
    if not args.phantom:
        if OPENMS.is_dir():
            return OPENMS, f"real scans {OPENMS}"
        print(f"# {OPENMS} is absent (see ../shared/data/README): profiling a fresh demist-phantom "
              "cohort instead")
    from demist_bids.phantom.cohort import generate_cohort

    bids = work / f"phantom-n{args.phantom_subjects}-seed{args.phantom_seed}-scale{args.phantom_scale:g}"
    if not (bids / "dataset_description.json").exists():
        generate_cohort(bids, subjects=args.phantom_subjects, seed=args.phantom_seed,
                        scale=args.phantom_scale, control_fraction=0.0, overwrite=True)
    return bids, (f"demist-phantom cohort ({args.phantom_subjects} subject(s), seed {args.phantom_seed}, "
                  f"scale {args.phantom_scale:g})")


def _run_demist(args, bids: Path, work: Path) -> tuple[int, float, float, float, float]:
    """The participant level in this process: exit code, its start and wall time, the graph's start and wall."""
    import shlex

    from nipype.pipeline.engine.workflows import Workflow

    from demist_bids.cli.run import run

    argv = [str(bids), str(work / "out"), "participant", "-w", str(work / "nipype")]
    if args.participant_label:
        argv += ["--participant-label", *args.participant_label]
    if args.model:
        argv += ["--model", str(args.model)]
    if args.nprocs:
        argv += ["--nprocs", str(args.nprocs)]
    if args.omp_nthreads:
        argv += ["--omp-nthreads", str(args.omp_nthreads)]
    argv += shlex.split(args.demist_args)
    if args.poll_sleep is not None:  # through a plugin file, as a user would set it
        plugin = work / "plugin.yml"
        plugin.write_text(f"plugin: MultiProc\nplugin_args:\n  poll_sleep_duration: {args.poll_sleep}\n")
        argv += ["--use-plugin", str(plugin)]
    graph: list[float] = []
    original = Workflow.run

    @functools.wraps(original)
    def timed_run(self, *a, **k):
        graph.append(time.time())
        try:
            return original(self, *a, **k)
        finally:
            graph.append(time.time())

    Workflow.run = timed_run
    started = time.time()
    try:
        with _stdout_to_stderr():
            code = run(argv)
    finally:
        Workflow.run = original
    total = time.time() - started
    graph_start, graph_wall = (graph[0], graph[-1] - graph[0]) if len(graph) >= 2 else (started, 0.0)
    return code, started, total, graph_start, graph_wall


# -- the report --------------------------------------------------------------------------------------
def _passes_by_node(records: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        grouped[str(Path(record["node_dir"]).resolve())].append(record)
    return grouped


def _scan_name(node: NodeTime) -> str:
    return node.name.split("/", 1)[0].removeprefix("single_subject_").removesuffix("_wf")


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_node_table(nodes: list[NodeTime], between: float, outside: float,
                     cpu: dict[str, float]) -> None:
    """Nodes, slowest first: wall seconds, share of the summed time, and CPU seconds (all threads)."""
    rows = [(n.name, n.seconds, cpu.get(str(n.folder.resolve()))) for n in sorted(nodes, key=lambda n: -n.seconds)]
    rows += [("(between nodes: Nipype scheduling, worker start-up)", between, None),
             ("(outside the graph: checks, validation, graph building, reports)", outside, None)]
    summed = sum(r[1] for r in rows) or 1.0
    width = max(len(r[0]) for r in rows)
    print(f"{'node':<{width}}  {'cpu_s':>8}  {'seconds':>8}  {'share':>6}")
    for name, seconds, used in rows:
        print(f"{name:<{width}}  {_cpu(used):>8}  {seconds:8.2f}  {100 * seconds / summed:5.1f}%")
    print(f"{'(sum)':<{width}}  {'':>8}  {summed:8.2f}  100.0%")


def print_pass_table(node: NodeTime, passes: list[dict]) -> float:
    """One synthesis node's network passes; returns the seconds they account for."""
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for record in passes:
        by_kind[record["pass"]].append(record)
    windows = by_kind.get("window", [])

    def total(kind: str, key: str = "seconds") -> float:
        return sum(r.get(key, 0.0) for r in by_kind.get(kind, []))

    def windows_in(kind: str) -> list[dict]:
        return [w for w in windows if w["in"] == kind]

    steps, cond, uncond = by_kind.get("step", []), by_kind.get("unet_streams", []), by_kind.get(
        "unet_unconditional", [])
    rows: list[tuple[str, int | str, int | str, float | None, float]] = []
    enc = windows_in("encoder")
    rows.append(("conditioning encoder", len(enc), sum(w["batch"] for w in enc), total("encoder", "cpu"),
                 total("encoder")))
    per_step_calls = (len(cond) + len(uncond)) // max(len(steps), 1)
    step_windows = windows_in("step")
    per_step_windows = sum(w["batch"] for w in step_windows) // max(len(steps), 1) if step_windows else "whole"
    for number, step in enumerate(steps, 1):
        rows.append((f"step {number} (t={step['t']}): UNet + streams" + (" + backbone" if uncond else ""),
                     per_step_calls, per_step_windows, step.get("cpu"), step["seconds"]))
    for label, kind in (("  all steps: UNet + streams (conditional)", "unet_streams"),
                        ("    of which ControlNet (spatial stream)", "controlnet"),
                        ("  all steps: backbone alone (guidance)", "unet_unconditional")):
        records = by_kind.get(kind, [])
        rows.append((label, len(records), sum(r["batch"] for r in records), total(kind, "cpu"), total(kind)))
    dec = windows_in("decoder")
    rows.append(("PSR decoder", len(dec), sum(w["batch"] for w in dec), total("decoder", "cpu"), total("decoder")))
    accounted = total("encoder") + total("step") + total("decoder")
    node_cpu = total("node", "cpu") if by_kind.get("node") else None
    rest_cpu = None if node_cpu is None else max(
        node_cpu - total("encoder", "cpu") - total("step", "cpu") - total("decoder", "cpu"), 0.0)
    rows.append(("rest of the node (model loading, image I/O, crop/pad)", "-", "-", rest_cpu,
                 max(node.seconds - accounted, 0.0)))
    print(f"\n# synthesis of {_scan_name(node)}: {node.seconds:.2f} s in the node")
    width = max(len(r[0]) for r in rows)
    print(f"{'pass':<{width}}  {'calls':>5}  {'windows':>7}  {'cpu_s':>8}  {'seconds':>8}  {'share':>6}")
    for name, calls, count, used, seconds in rows:
        print(f"{name:<{width}}  {calls!s:>5}  {count!s:>7}  {_cpu(used):>8}  {seconds:8.2f}  "
              f"{100 * seconds / max(node.seconds, 1e-9):5.1f}%")
    return accounted


def print_levers(info: dict, grid_shape: tuple[int, ...] | None) -> None:
    box = [b[1] - b[0] for b in info.get("box", [])]
    padded = info.get("padded_shape")
    if grid_shape and box:
        print(f"# cropping box {'x'.join(map(str, box))} of the model grid {'x'.join(map(str, grid_shape))} "
              f"({100 * math.prod(box) / math.prod(grid_shape):.0f}% of its voxels), padded to "
              f"{'x'.join(map(str, padded))}")
    if not (padded and info.get("_encoder_roi")):
        return
    enc, dec = info["_encoder_roi"], info["_decoder_roi"]
    latent = [p // info["_factor"] for p in padded]
    what_if = ", ".join(
        f"overlap {o:g}: {window_count(padded, enc, o)}+{window_count(latent, dec, o)}" for o in WHAT_IF_OVERLAPS)
    print(f"# autoencoder windows {'x'.join(map(str, enc))} (image) at overlap {info.get('autoencoder_overlap')}, "
          f"{info.get('window_batch')} per call; encoder+decoder windows on this box: {what_if}")
    print(f"# sampler {info.get('sampler')} x {info.get('steps')} steps from {info.get('start')}, guidance "
          f"{info.get('guidance')}, {info.get('dtype')}, UNet {info.get('mode')}"
          + (f" (latent window {info['latent_window']})" if info.get("latent_window") else ""))


def _synthesis_info(node: NodeTime) -> tuple[dict, tuple[int, ...] | None]:
    """The node's ``synthesis.json`` plus the autoencoder windows its model used, and the model grid."""
    import nibabel as nib

    from demist_bids.models.io import read_model_config
    from nipype.utils.filemanip import loadpkl

    path = node.folder / "synthesis.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    inputs = loadpkl(node.folder / f"result_{SYNTHESIS}.pklz").inputs
    model_dir = Path(inputs["model_dir"])
    student = model_dir / "student"
    if info.get("sampler") == "distilled" and student.is_dir():
        model_dir = student
    config = read_model_config(model_dir)
    factor = int(config.autoencoder.downsampling)
    patch = tuple(int(p) for p in config.patch_size)
    if info.get("latent_window"):
        patch = tuple(min(p, w * factor) for p, w in zip(patch, info["latent_window"]))
    info.update(_encoder_roi=patch, _decoder_roi=tuple(p // factor for p in patch), _factor=factor)
    psr = node.folder / "psr.nii.gz"
    return info, (tuple(nib.load(psr).shape) if psr.is_file() else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sys.platform != "win32":
        multiprocessing.set_start_method("fork", force=True)  # workers inherit the pass timers
    given = contextlib.nullcontext(str(args.work)) if args.work else \
        tempfile.TemporaryDirectory(prefix="participant-profile-")
    with given as folder:
        work = Path(folder).resolve()
        work.mkdir(parents=True, exist_ok=True)
        bids, source = _choose_input(args, work)
        for sub in ("out", "nipype", "passes.jsonl"):  # always a fresh run: nothing cached
            target = work / sub
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        load_before = os.getloadavg()
        usage_before = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        with PassRecorder(work / "passes.jsonl") as recorder:
            code, started, total, _, graph_wall = _run_demist(args, bids, work)
        load_after = os.getloadavg()
        graphs = [p for p in (work / "nipype").glob("demist_*_wf") if p.is_dir()]
        nodes, cached = node_times(graphs[0], started) if graphs else ([], [])
        print(f"# {source}; demist exit code {code}; {os.cpu_count()} CPUs, load average "
              f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)")
        if cached:
            print(f"# {len(cached)} node(s) came from an earlier run and are left out: {', '.join(cached)}")
        if not nodes:
            print("# no node ran: see the demist log on stderr")
            return 1
        node_span = union_seconds([(n.start, n.end) for n in nodes])
        between = max(graph_wall - node_span, 0.0)
        outside = max(total - graph_wall, 0.0)
        passes = _passes_by_node(recorder.records())
        node_cpu = {folder: sum(r["cpu"] for r in records if r["pass"] == "node")
                    for folder, records in passes.items() if any(r["pass"] == "node" for r in records)}
        print_node_table(nodes, between, outside, node_cpu)
        summed = sum(n.seconds for n in nodes)
        if summed > node_span + 1:
            print(f"# nodes ran side by side: {summed:.1f} s of node time in {node_span:.1f} s with a node running")
        used = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        cpu_total = sum(u.ru_utime + u.ru_stime - b.ru_utime - b.ru_stime for u, b in zip(used, usage_before))
        print(f"# CPU time of the run (this process and its workers, user+system): {cpu_total:.1f} s in "
              f"{total:.1f} s of wall time, {cpu_total / max(total, 1e-9):.2f} cores busy on average")
        synth_nodes = [n for n in nodes if n.stage == "synthesis"]
        for node in synth_nodes:
            info, grid = _synthesis_info(node)
            mine = passes.get(str(node.folder.resolve()), [])
            if not mine:
                print(f"\n# synthesis of {_scan_name(node)}: no pass was recorded (a worker not forked "
                      "from this process?); node time only")
            else:
                print_pass_table(node, mine)
            print_levers(info, grid)
        stages = defaultdict(float)
        for node in nodes:
            stages[node.stage] += node.seconds
        print(f"\n# stages: preprocessing {stages['preprocessing']:.1f} s, synthesis {stages['synthesis']:.1f} s, "
              f"outputs and reportlets {stages['outputs']:.1f} s, between nodes {between:.1f} s, outside the "
              f"graph {outside:.1f} s")
        scans = max(len(synth_nodes), 1)
        print(f"total_s={total:.1f} preprocessing_s={stages['preprocessing']:.1f} "
              f"synthesis_s={stages['synthesis']:.1f} per_scan_s={total / scans:.1f}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
