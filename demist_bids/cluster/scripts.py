"""Render the sbatch scripts: the participant array, the group job, the training job.

Each script is a header of ``#SBATCH`` lines and plain variable assignments
(everything that depends on the user's options, shell-quoted) followed by a
fixed bash body that only reads those variables. A user adapting a script by
hand therefore edits the top and never the logic.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from demist_bids.cluster.submit import dependency_options
from demist_bids.cluster.tasks import Task


@dataclass
class Resources:
    """What one job asks SLURM for."""

    time: str = "04:00:00"
    cpus: int = 4
    mem: str = "16G"
    gres: str = ""
    """Generic resources, e.g. ``gpu:1`` or ``gpu:a100:1``; empty asks for none."""


@dataclass
class Plan:
    """Everything the scripts need."""

    bids_dir: Path
    output_dir: Path
    work_dir: Path
    log_dir: Path
    tasks: list[Task]
    participant: Resources = field(default_factory=Resources)
    group: Resources = field(default_factory=lambda: Resources("01:00:00", 1, "4G"))
    partition: str = ""
    account: str = ""
    qos: str = ""
    max_parallel: int = 0
    """At most this many array tasks at once (``--array=...%N``); 0: no limit."""
    sbatch_args: list[str] = field(default_factory=list)
    """Extra ``#SBATCH`` options, copied verbatim into both scripts."""
    command: str = "demist"
    """The demist executable (bare mode)."""
    container: Path | None = None
    """A Singularity/Apptainer image; None runs ``command`` directly."""
    runtime: str = "apptainer"
    binds: list[str] = field(default_factory=list)
    """Extra ``-B`` bind specifications (``SRC[:DST[:ro]]``), e.g. a model directory."""
    nv: bool | None = None
    """Pass ``--nv``; None decides from whether the participant jobs request a GPU."""
    demist_args: list[str] = field(default_factory=list)
    """Further demist options for both levels (container paths in container mode)."""
    job_name: str = "demist"
    train: Resources = field(default_factory=lambda: Resources("24:00:00", 4, "32G"))
    """Resources per node of the training job."""
    nodes: int = 1
    ntasks_per_node: int = 1
    """Training processes per node: one per GPU (or a few on CPUs)."""
    signal_before: int = 300
    """Seconds before the time limit at which SLURM sends SIGUSR1 (training checkpoints)."""
    requeue: bool = True
    """A training job stopped by a signal requeues itself and resumes from its checkpoint."""

    @property
    def use_nv(self) -> bool:
        return self.nv if self.nv is not None else "gpu" in self.participant.gres

    @property
    def use_nv_train(self) -> bool:
        return self.nv if self.nv is not None else "gpu" in self.train.gres

    @property
    def status_dir(self) -> Path:
        return self.log_dir / "status"


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _bash_array(name: str, items: list[str], one_per_line: bool = True) -> str:
    if not one_per_line or not items:
        return f"{name}=({' '.join(_q(i) for i in items)})"
    return f"{name}=(\n" + "".join(f"  {_q(i)}\n" for i in items) + ")"


def _sbatch_lines(plan: Plan, res: Resources, name: str, output: str, extra: list[str]) -> list[str]:
    opts = [f"--job-name={name}", f"--output={output}", f"--time={res.time}",
            f"--cpus-per-task={res.cpus}", f"--mem={res.mem}", *extra]
    opts += [f"--{key}={value}" for key, value in
             (("partition", plan.partition), ("account", plan.account), ("qos", plan.qos),
              ("gres", res.gres)) if value]
    opts += plan.sbatch_args
    return [f"#SBATCH {opt}" for opt in opts]


# Run inside each task: --cleanenv keeps the host environment out of the container, so
# the few variables a task needs from SLURM (its GPUs, its rank) are passed in by name.
_FORWARD = "\n".join([
    "for v in CUDA_VISIBLE_DEVICES SLURM_PROCID SLURM_NTASKS SLURM_LOCALID MASTER_ADDR MASTER_PORT; do",
    '  if [ -n "${!v:-}" ]; then export "APPTAINERENV_$v=${!v}" "SINGULARITYENV_$v=${!v}"; fi',
    "done",
    'exec "$@"',
])


def _runner(plan: Plan, gpu: bool, launch: list[str]) -> str:
    """A bash function ``run_demist WORK_DIR LEVEL [ARGS...]`` for bare or container mode.

    ``launch`` prefixes the command (``srun`` for one process per task); ``gpu``
    adds ``--nv``, which makes the host's NVIDIA driver visible in the container.
    """
    lines = [_bash_array("LAUNCH", launch, one_per_line=False)]
    if plan.container is None:
        return "\n".join([
            *lines,
            _bash_array("DEMIST", shlex.split(plan.command), one_per_line=False),
            "run_demist() {  # run_demist WORK_DIR LEVEL [ARGS...]",
            '  local work="$1" level="$2"; shift 2',
            '  ${LAUNCH[@]+"${LAUNCH[@]}"} "${DEMIST[@]}" "$BIDS_DIR" "$OUTPUT_DIR" "$level" -w "$work" "$@"',
            "}",
        ])
    binds = ['-B "$BIDS_DIR:/data:ro"', '-B "$OUTPUT_DIR:/out"', '-B "$work:/work"']
    binds += [f"-B {_q(b)}" for b in plan.binds]
    flags = "--cleanenv" + (" --nv" if gpu else "")
    return "\n".join([
        *lines,
        f"IMAGE={_q(plan.container)}",
        f"RUNTIME={_q(plan.runtime)}",
        f"FORWARD='{_FORWARD}'",
        "run_demist() {  # run_demist WORK_DIR LEVEL [ARGS...]",
        '  local work="$1" level="$2"; shift 2',
        '  ${LAUNCH[@]+"${LAUNCH[@]}"} bash -c "$FORWARD" forward \\',
        f'    "$RUNTIME" run {flags} \\',
        *(f"    {b} \\" for b in binds),
        '    "$IMAGE" /data /out "$level" -w /work "$@"',
        "}",
    ])


def _header(plan: Plan, sbatch: list[str], purpose: str, runner: str, tasks: bool = True) -> str:
    lines = [
        "#!/bin/bash",
        *sbatch,
        f"# {purpose}",
        "# Generated by demist-slurm; edit the settings below, not the logic after them.",
        "",
        f"BIDS_DIR={_q(plan.bids_dir)}",
        f"OUTPUT_DIR={_q(plan.output_dir)}",
        f"WORK_DIR={_q(plan.work_dir)}",
        f"LOG_DIR={_q(plan.log_dir)}",
    ]
    if tasks:
        labels = [t.subject + (f" {t.session}" if t.session else "") for t in plan.tasks]
        lines += [
            f"STATUS_DIR={_q(plan.status_dir)}",
            "# One array task per line: participant label [session label]",
            _bash_array("TASKS", labels),
        ]
    return "\n".join([
        *lines,
        "# Further demist options",
        _bash_array("DEMIST_ARGS", plan.demist_args, one_per_line=False),
        runner,
        "",
    ])


_PARTICIPANT_BODY = r"""
set -uo pipefail
export NIPYPE_NO_ET=1
read -r SUBJECT SESSION <<< "${TASKS[$SLURM_ARRAY_TASK_ID]}"
NAME="sub-${SUBJECT}${SESSION:+_ses-${SESSION}}"
TASK_WORK="${WORK_DIR}/${NAME}"  # per task, and stable: a resubmission resumes from its cache
STATUS="${STATUS_DIR}/${SLURM_ARRAY_JOB_ID}"
mkdir -p "$TASK_WORK" "$STATUS"
CPUS="${SLURM_CPUS_PER_TASK:-1}"
MEM_MB="${SLURM_MEM_PER_NODE:-0}"
ARGS=(--participant-label "$SUBJECT" --nprocs "$CPUS" --omp-nthreads "$CPUS")
if [ -n "$SESSION" ]; then ARGS+=(--session-label "$SESSION"); fi
if [ "$MEM_MB" -gt 0 ]; then ARGS+=(--mem "$MEM_MB"); fi
echo "demist-slurm: ${NAME}, array task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID}, on $(hostname)"
run_demist "$TASK_WORK" participant "${ARGS[@]}" ${DEMIST_ARGS[@]+"${DEMIST_ARGS[@]}"}
rc=$?
echo "$rc" > "${STATUS}/${NAME}.rc.part" && mv "${STATUS}/${NAME}.rc.part" "${STATUS}/${NAME}.rc"
echo "demist-slurm: ${NAME} finished with exit code ${rc}"
exit "$rc"
"""

_TRAIN_BODY = r"""
set -uo pipefail
export NIPYPE_NO_ET=1
# Rank 0 listens on the first node of the allocation; the port follows from the job id.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"
export MASTER_ADDR MASTER_PORT
TRAIN_WORK="${WORK_DIR}/train"
mkdir -p "$TRAIN_WORK"
CPUS="${SLURM_CPUS_PER_TASK:-1}"
export SRUN_CPUS_PER_TASK="$CPUS"  # srun does not inherit --cpus-per-task from sbatch
echo "demist-slurm: train job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}), ${SLURM_NTASKS} processes, rendezvous ${MASTER_ADDR}:${MASTER_PORT}"
# --resume: a requeued or resubmitted job continues from the last checkpoint.
run_demist "$TRAIN_WORK" train --resume --nprocs "$CPUS" --omp-nthreads "$CPUS" ${DEMIST_ARGS[@]+"${DEMIST_ARGS[@]}"}
rc=$?
echo "demist-slurm: train finished with exit code ${rc}"
# 75: a signal (time limit, preemption, scancel --signal) stopped training after a checkpoint.
if [ "$rc" -eq 75 ] && [ "$REQUEUE" -eq 1 ]; then
  echo "demist-slurm: requeueing job ${SLURM_JOB_ID}; it will resume from the checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
"""

_GROUP_BODY = r"""
set -uo pipefail
export NIPYPE_NO_ET=1
ARRAY_JOB="${DEMIST_ARRAY_JOB_ID:?submit with --export=ALL,DEMIST_ARRAY_JOB_ID=<participant array job id>}"
STATUS="${STATUS_DIR}/${ARRAY_JOB}"
mkdir -p "${WORK_DIR}/group" "$STATUS"
run_demist "${WORK_DIR}/group" group ${DEMIST_ARGS[@]+"${DEMIST_ARGS[@]}"}
rc=$?
# Surface the participant tasks that failed, were killed or never ran.
SUMMARY="${STATUS}/tasks.tsv"
printf 'participant_id\tsession_id\texit_code\tlog\n' > "${SUMMARY}.part"
failed=0
for index in "${!TASKS[@]}"; do
  read -r SUBJECT SESSION <<< "${TASKS[$index]}"
  NAME="sub-${SUBJECT}${SESSION:+_ses-${SESSION}}"
  LOG="${LOG_DIR}/participant_${ARRAY_JOB}_${index}.log"
  code="$(cat "${STATUS}/${NAME}.rc" 2>/dev/null || echo none)"
  printf 'sub-%s\t%s\t%s\t%s\n' "$SUBJECT" "${SESSION:+ses-$SESSION}" "$code" "$LOG" >> "${SUMMARY}.part"
  if [ "$code" != 0 ]; then
    failed=$((failed + 1))
    echo "demist-slurm: FAILED ${NAME} (exit code: ${code}); see ${LOG}" >&2
  fi
done
mv "${SUMMARY}.part" "$SUMMARY"
echo "demist-slurm: ${#TASKS[@]} participant tasks, ${failed} failed; summary in ${SUMMARY}"
echo "demist-slurm: group level finished with exit code ${rc}"
if [ "$rc" -eq 0 ] && [ "$failed" -gt 0 ]; then rc=1; fi
exit "$rc"
"""


def participant_script(plan: Plan) -> str:
    """The array script: task ``i`` runs the participant level for ``plan.tasks[i]``."""
    array = f"0-{len(plan.tasks) - 1}" + (f"%{plan.max_parallel}" if plan.max_parallel else "")
    sbatch = _sbatch_lines(plan, plan.participant, f"{plan.job_name}-participant",
                           f"{plan.log_dir}/participant_%A_%a.log", ["--ntasks=1", f"--array={array}"])
    purpose = f"demist participant level, one array task per line of TASKS ({len(plan.tasks)})."
    return _header(plan, sbatch, purpose, _runner(plan, plan.use_nv, [])) + _PARTICIPANT_BODY


def group_script(plan: Plan) -> str:
    """The group job: runs after the array and reports which participant tasks failed."""
    sbatch = _sbatch_lines(plan, plan.group, f"{plan.job_name}-group",
                           f"{plan.log_dir}/group_%j.log", ["--ntasks=1"])
    purpose = "demist group level; submit it dependent on the participant array."
    runner = _runner(plan, "gpu" in plan.group.gres, [])
    return _header(plan, sbatch, purpose, runner) + _GROUP_BODY


def train_script(plan: Plan) -> str:
    """One training job: ``srun`` starts one DDP process per task on every node."""
    res = plan.train
    extra = [f"--nodes={plan.nodes}", f"--ntasks-per-node={plan.ntasks_per_node}",
             f"--signal=USR1@{plan.signal_before}", "--open-mode=append"]
    extra += ["--requeue"] if plan.requeue else ["--no-requeue"]
    sbatch = _sbatch_lines(plan, res, f"{plan.job_name}-train", f"{plan.log_dir}/train_%j.log", extra)
    purpose = (f"demist train: {plan.nodes} node(s) x {plan.ntasks_per_node} process(es), "
               "PyTorch DDP (NCCL on GPUs, gloo on CPUs).")
    # Ranks stop together after a signal and exit 75 a moment apart: srun must not kill the
    # late ones for the early one's non-zero exit (the job would end 143, not 75). A rank
    # that really crashes takes the others down after --wait seconds instead of a hang.
    launch = ["srun", "--kill-on-bad-exit=0", "--wait=120"]
    header = _header(plan, sbatch, purpose, _runner(plan, plan.use_nv_train, launch), tasks=False)
    return header + f"REQUEUE={int(plan.requeue)}\n" + _TRAIN_BODY


def submit_commands(participant: Path, group: Path, dependency: str = "afterany") -> str:
    """The two sbatch calls that submit the scripts, as a user would type them."""
    group_options = " ".join(dependency_options("$jid", dependency))
    return "\n".join([
        f"jid=$(sbatch --parsable {_q(participant)}); jid=${{jid%%;*}}",
        f"sbatch {group_options} {_q(group)}",
        "",
    ])
