"""demist-slurm's scripts: what they ask SLURM for, and that bash accepts them (no cluster needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from demist_bids.cluster.cli import main
from demist_bids.cluster.tasks import Task, find_tasks


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "bids"
    for sub in ("01", "02", "03"):
        (root / f"sub-{sub}" / "anat").mkdir(parents=True)
    for ses in ("a", "b"):
        (root / "sub-03" / f"ses-{ses}" / "anat").mkdir(parents=True)
    return root


def _dry_run(capsys, *args: str) -> dict[str, str]:
    assert main(["--dry-run", *args]) == 0
    text = capsys.readouterr().out
    parts = {}
    for block in text.split("# ===== ")[1:]:
        title, body = block.split(" =====\n", 1)
        parts[Path(title).name] = body
    return parts


def test_tasks_from_folders(dataset):
    assert find_tasks(dataset) == [Task("01"), Task("02"), Task("03")]
    assert find_tasks(dataset, ["sub-03", "01"]) == [Task("01"), Task("03")]
    assert find_tasks(dataset, ["03"], per_session=True) == [Task("03", "a"), Task("03", "b")]
    assert find_tasks(dataset, per_session=True, session_label=["ses-b"]) == [Task("03", "b")]
    with pytest.raises(ValueError, match="no such participant.*04"):
        find_tasks(dataset, ["04"])


def test_unknown_participant_is_a_usage_error(dataset, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(dataset), "out", "--participant-label", "09", "--dry-run"])
    assert exc.value.code == 2
    assert "09" in capsys.readouterr().err


def test_work_dir_inside_output_is_refused(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--dry-run", str(dataset), str(tmp_path / "out"), "-w", str(tmp_path / "out" / "work")])
    assert exc.value.code == 2 and "must not be inside" in capsys.readouterr().err


def test_bare_scripts(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    parts = _dry_run(
        capsys, str(dataset), str(out), "--participant-label", "01", "02", "-w", str(tmp_path / "w"),
        "--max-parallel", "2", "--partition", "gpu", "--gres", "gpu:1", "--", "--steps", "5",
    )
    array, group, submit = parts["demist_participant.sbatch"], parts["demist_group.sbatch"], parts["submit"]
    assert "#SBATCH --array=0-1%2" in array
    assert "#SBATCH --gres=gpu:1" in array and "#SBATCH --partition=gpu" in array
    assert "#SBATCH --gres" not in group and "#SBATCH --array" not in group
    assert f"#SBATCH --output={out}/logs/slurm/participant_%A_%a.log" in array
    assert "TASKS=(\n  01\n  02\n)" in array
    assert "DEMIST_ARGS=(--steps 5)" in array and "DEMIST_ARGS=(--steps 5)" in group
    assert "apptainer" not in array and "--nv" not in array
    assert "--dependency=afterany:$jid" in submit and "DEMIST_ARRAY_JOB_ID=$jid" in submit
    assert not out.exists(), "a dry run writes nothing"
    for script in (array, group, submit):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_container_scripts(dataset, tmp_path, capsys):
    parts = _dry_run(
        capsys, str(dataset), str(tmp_path / "out"), "--container", "/images/demist.sif",
        "--runtime", "singularity", "--gres", "gpu:1", "-B", "/models:/models:ro",
        "--per-session", "--dependency", "afterok",
    )
    array, group = parts["demist_participant.sbatch"], parts["demist_group.sbatch"]
    assert '"$RUNTIME" run --cleanenv --nv' in array
    assert "RUNTIME=singularity" in array and "IMAGE=/images/demist.sif" in array
    for bind in ('-B "$BIDS_DIR:/data:ro"', '-B "$OUTPUT_DIR:/out"', '-B "$work:/work"',
                 "-B /models:/models:ro"):
        assert bind in array
    assert '"$IMAGE" /data /out "$level" -w /work' in array
    assert "--nv" not in group, "the group job asks for no GPU"
    assert "'03 a'" in array and "'03 b'" in array
    assert "--kill-on-invalid-dep=yes" in parts["submit"]
    for script in (array, group):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_train_script(dataset, tmp_path, capsys):
    parts = _dry_run(
        capsys, "--train", str(dataset), str(tmp_path / "out"), "--nodes", "2",
        "--ntasks-per-node", "4", "--gres", "gpu:4", "--time", "24:00:00",
        "--container", "/images/demist.sif", "--", "--preset", "paper",
    )
    script = parts["demist_train.sbatch"]
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--signal=USR1@300",
                 "--requeue", "--open-mode=append", "--time=24:00:00"):
        assert f"#SBATCH {line}\n" in script
    assert "LAUNCH=(srun --kill-on-bad-exit=0 --wait=120)" in script
    assert '"$RUNTIME" run --cleanenv --nv' in script
    assert 'bash -c "$FORWARD" forward' in script and "SLURM_PROCID" in script
    assert 'run_demist "$TRAIN_WORK" train --resume' in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert parts["submit"].strip().startswith("sbatch ")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_forwarded_environment_reaches_the_command(tmp_path, capsys, dataset):
    """The container wrapper exports each task's rank and GPUs under the runtime's prefixes."""
    from demist_bids.cluster.scripts import _FORWARD

    env = {"PATH": "/usr/bin:/bin", "SLURM_PROCID": "3", "CUDA_VISIBLE_DEVICES": "1,2"}
    res = subprocess.run(["bash", "-c", _FORWARD, "forward", "env"], env=env,
                         capture_output=True, text=True, check=True)
    seen = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert seen["APPTAINERENV_SLURM_PROCID"] == "3" and seen["SINGULARITYENV_SLURM_PROCID"] == "3"
    assert seen["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "1,2"
    assert "APPTAINERENV_MASTER_ADDR" not in seen


def test_documented_example_is_what_the_tool_writes(tmp_path, capsys):
    """docs/slurm.md shows a generated script: regenerate it and compare, so the docs cannot drift."""
    project = tmp_path / "project"
    for sub in ("01", "02", "03"):
        (project / "bids" / f"sub-{sub}" / "anat").mkdir(parents=True)
    parts = _dry_run(
        capsys, str(project / "bids"), str(project / "derivatives" / "demist"),
        "-w", "/scratch/demist-work", "--container", str(project / "containers" / "demist-0.1.0.sif"),
        "--runtime", "apptainer", "--partition", "gpu", "--gres", "gpu:1", "--time", "02:00:00",
        "--cpus-per-task", "8", "--mem", "32G", "--max-parallel", "20",
    )
    docs = (Path(__file__).resolve().parents[2] / "docs" / "slurm.md").read_text()
    documented = docs.split("<!-- demist-slurm example: participant -->\n```bash\n")[1].split("```")[0]
    generated = parts["demist_participant.sbatch"].replace(str(tmp_path), "").rstrip("\n") + "\n"
    assert documented == generated
    submit = parts["submit"].replace(str(tmp_path), "").strip()
    assert submit in docs
