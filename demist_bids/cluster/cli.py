"""``demist-slurm BIDS_DIR OUTPUT_DIR [options] [-- demist options]``.

argparse rather than Typer: the BIDS-App form ``--participant-label 01 02``
(several values after one flag) and a ``--`` pass-through to demist both come
for free, and nothing heavier than the standard library loads.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from demist_bids.cluster.scripts import (Plan, Resources, group_script, participant_script,
                                         submit_commands, train_script)
from demist_bids.cluster.submit import SubmissionError, sbatch, submit
from demist_bids.cluster.tasks import find_tasks


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demist-slurm",
        description="Run demist on a SLURM cluster: one array task per participant (or session), "
        "then one group job that waits for all of them and reports the tasks that failed. "
        "Options after '--' are passed to demist.",
    )
    p.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset")
    p.add_argument("output_dir", type=Path, help="root of the output derivatives dataset")
    p.add_argument("--dry-run", action="store_true", help="print the scripts; submit nothing")
    p.add_argument("--train", action="store_true",
                   help="submit one multi-process training job (demist train under srun) instead "
                   "of the participant array and group job")

    g = p.add_argument_group("What to run")
    g.add_argument("--participant-label", "--participant_label", nargs="+", default=[],
                   help="subjects (sub- optional); default: every sub-* folder")
    g.add_argument("--session-label", "--session_label", nargs="+", default=[],
                   help="sessions (ses- optional) to process")
    g.add_argument("--per-session", action="store_true",
                   help="one array task per subject and session instead of per subject")
    g.add_argument("-w", "--work-dir", type=Path, default=Path("work"),
                   help="work directory on a filesystem every node sees; one subfolder per "
                   "task (default: ./work)")
    g.add_argument("--log-dir", type=Path,
                   help="SLURM logs and task exit codes (default: OUTPUT_DIR/logs/slurm)")

    g = p.add_argument_group("Resources per participant task")
    g.add_argument("--time", default="04:00:00", help="wall time (default: %(default)s)")
    g.add_argument("--cpus-per-task", type=int, default=4, help="CPUs (default: %(default)s)")
    g.add_argument("--mem", default="16G", help="memory (default: %(default)s)")
    g.add_argument("--gres", default="", help="generic resources, e.g. gpu:1 (default: none)")
    g.add_argument("--max-parallel", type=int, default=0,
                   help="at most this many tasks at once (default: no limit)")

    g = p.add_argument_group("Training job (--train); --time, --cpus-per-task, --mem, --gres are per node")
    g.add_argument("--nodes", type=int, default=1, help="nodes (default: %(default)s)")
    g.add_argument("--ntasks-per-node", type=int, default=1,
                   help="training processes per node, one per GPU (default: %(default)s)")
    g.add_argument("--signal-before", type=int, default=300, metavar="SECONDS",
                   help="SIGUSR1 this long before the time limit, so training saves a checkpoint "
                   "(default: %(default)s)")
    g.add_argument("--no-requeue", dest="requeue", action="store_false",
                   help="do not requeue a training job stopped by a signal (default: requeue; "
                   "it resumes from its checkpoint)")

    g = p.add_argument_group("Scheduler")
    g.add_argument("--partition", default="")
    g.add_argument("--account", default="")
    g.add_argument("--qos", default="")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                   help="extra sbatch option for both scripts, e.g. --sbatch-arg=--mail-type=END")
    g.add_argument("--group-time", default="01:00:00", help="group job wall time")
    g.add_argument("--group-mem", default="4G", help="group job memory")
    g.add_argument("--dependency", choices=("afterany", "afterok"), default="afterany",
                   help="afterany (default): the group job always runs and reports failed tasks; "
                   "afterok: it runs only if every task succeeded")

    g = p.add_argument_group("Software")
    g.add_argument("--command", default="demist",
                   help="demist executable when not using a container (default: %(default)s)")
    g.add_argument("--container", type=Path,
                   help="Singularity/Apptainer image (.sif); BIDS_DIR, OUTPUT_DIR and each task's "
                   "work directory are bound to /data, /out and /work")
    g.add_argument("--runtime", choices=("apptainer", "singularity"),
                   help="container runtime (default: apptainer if on PATH, else singularity)")
    g.add_argument("-B", "--bind", action="append", default=[], metavar="SRC[:DST[:ro]]",
                   help="extra bind mount, e.g. a model directory")
    g.add_argument("--nv", action=argparse.BooleanOptionalAction, default=None,
                   help="GPU support in the container (default: on when --gres asks for a GPU)")
    return p


def plan_from_args(opts: argparse.Namespace, demist_args: list[str]) -> Plan:
    """Turn the parsed options into a :class:`Plan` (absolute paths, tasks discovered)."""
    bids_dir = opts.bids_dir.expanduser().absolute()
    output_dir = opts.output_dir.expanduser().absolute()
    tasks = find_tasks(bids_dir, opts.participant_label, opts.session_label, opts.per_session)
    if opts.session_label and not opts.per_session:
        demist_args = ["--session-label", *opts.session_label, *demist_args]
    if opts.train and opts.participant_label:
        demist_args = ["--participant-label", *opts.participant_label, *demist_args]
    runtime = opts.runtime or ("apptainer" if shutil.which("apptainer") else "singularity")
    return Plan(
        bids_dir=bids_dir,
        output_dir=output_dir,
        work_dir=opts.work_dir.expanduser().absolute(),
        log_dir=(opts.log_dir or output_dir / "logs" / "slurm").expanduser().absolute(),
        tasks=tasks,
        participant=Resources(opts.time, opts.cpus_per_task, opts.mem, opts.gres),
        train=Resources(opts.time, opts.cpus_per_task, opts.mem, opts.gres),
        nodes=opts.nodes, ntasks_per_node=opts.ntasks_per_node,
        signal_before=opts.signal_before, requeue=opts.requeue,
        group=Resources(opts.group_time, 1, opts.group_mem),
        partition=opts.partition, account=opts.account, qos=opts.qos,
        max_parallel=opts.max_parallel, sbatch_args=opts.sbatch_arg,
        command=opts.command, container=opts.container and opts.container.absolute(),
        runtime=runtime, binds=opts.bind, nv=opts.nv, demist_args=demist_args,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    demist_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, demist_args = argv[:cut], argv[cut + 1:]
    parser = _build_parser()
    opts = parser.parse_args(argv)
    if not opts.bids_dir.is_dir():
        parser.error(f"{opts.bids_dir} is not a directory")
    try:
        plan = plan_from_args(opts, demist_args)
    except ValueError as exc:
        parser.error(str(exc))
    if plan.work_dir == plan.output_dir or plan.output_dir in plan.work_dir.parents:
        parser.error(f"the work directory {plan.work_dir} must not be inside {plan.output_dir}")
    if opts.train:
        return _train(opts, plan)
    scripts = {
        plan.log_dir / "demist_participant.sbatch": participant_script(plan),
        plan.log_dir / "demist_group.sbatch": group_script(plan),
    }
    participant, group = scripts
    if opts.dry_run:
        _print(scripts, submit_commands(participant, group, opts.dependency))
        return 0
    _write(plan, scripts)
    try:
        array_id, group_id = submit(participant, group, opts.dependency)
    except SubmissionError as exc:
        print(f"demist-slurm: {exc}", file=sys.stderr)
        return 1
    print(f"Submitted {len(plan.tasks)} participant task(s) as array job {array_id}; "
          f"group job {group_id} runs after it ({opts.dependency}).")
    print(f"Logs: {plan.log_dir}")
    return 0


def _train(opts: argparse.Namespace, plan: Plan) -> int:
    path = plan.log_dir / "demist_train.sbatch"
    if opts.dry_run:
        _print({path: train_script(plan)}, f"sbatch {shlex.quote(str(path))}\n")
        return 0
    _write(plan, {path: train_script(plan)})
    try:
        job_id = sbatch(path)
    except SubmissionError as exc:
        print(f"demist-slurm: {exc}", file=sys.stderr)
        return 1
    print(f"Submitted training job {job_id} ({plan.nodes} node(s) x {plan.ntasks_per_node} "
          f"process(es)); log: {plan.log_dir}/train_{job_id}.log")
    return 0


def _print(scripts: dict[Path, str], commands: str) -> None:
    for path, text in scripts.items():
        print(f"# ===== {path} =====\n{text}")
    print(f"# ===== submit =====\n{commands}")


def _write(plan: Plan, scripts: dict[Path, str]) -> None:
    plan.status_dir.mkdir(parents=True, exist_ok=True)  # SLURM needs the log folder to exist
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    for path, text in scripts.items():
        path.write_text(text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
