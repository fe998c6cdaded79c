"""The one typed configuration of a demist run.

Every option of the command line lands in one :class:`Config` made of
sections (``execution``, ``nipype``, ``synthesis``, ``train``, ``seeds``).
It is written as TOML to ``OUTPUT_DIR/logs/`` for every run so that a result can
always be traced to the exact settings that made it. Nothing here has side
effects at import; only the command line and the top-level workflow factory read
it, everything below them takes explicit keyword arguments.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

AnalysisLevel = Literal["participant", "group", "train"]
Device = Literal["auto", "cpu", "cuda"]
TrainStage = Literal["all", "ae", "align", "backbone", "diffusion", "regressor", "eval", "distill"]


def _new_run_uuid() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{uuid.uuid4()}"


@dataclass
class ExecutionConfig:
    """Where the data are, what to process and how the run behaves."""

    bids_dir: Path = Path(".")
    """Root of the input BIDS dataset."""
    output_dir: Path = Path("derivatives/demist")
    """Root of the demist derivatives dataset."""
    analysis_level: AnalysisLevel = "participant"
    """participant, group or train."""
    work_dir: Path = Path("work")
    """Nipype's cache and the pybids index; reruns reuse it."""
    participant_label: list[str] = field(default_factory=list)
    """Subjects to process, without ``sub-``; empty means all."""
    session_label: list[str] = field(default_factory=list)
    """Sessions to process, without ``ses-``; empty means all."""
    bids_filter_file: Path | None = None
    """JSON with pybids filters per query (``t1w``, ``flair``) overriding the defaults."""
    derivatives: dict[str, Path] = field(default_factory=dict)
    """Extra derivatives datasets by name (``smriprep``, ``lesions``, ``psr``)."""
    skip_bids_validation: bool = False
    """Do not run bids-validator-deno on the input."""
    boilerplate_only: bool = False
    """Write the citation boilerplate and stop."""
    stop_on_first_crash: bool = False
    """Abort at the first failing node instead of finishing other subjects."""
    notrack: bool = True
    """demist sends no telemetry in any case; accepted for NiPreps compatibility."""
    output_spaces: list[str] = field(default_factory=list)
    """Output spaces besides the native T1w grid, normalized by
    :func:`demist_bids.utils.spaces.parse_output_spaces`: ``T1w``, ``model`` (the 1 mm RAS grid
    the model used) and TemplateFlow templates as ``<name>:res-<label>``."""
    max_image_voxels: int = 512**3
    """Largest voxel count an input image's header may declare; more is refused (exit 65)
    before any voxel is read, since nibabel would allocate whatever the header promises."""
    verbosity: int = 0
    """How many ``-v`` were given."""
    reports_only: bool = False
    """Rebuild the subject reports and the dataset-level files from the outputs already in the
    output directory, recomputing nothing (participant level; fMRIPrep's ``--reports-only``)."""
    write_graph: bool = False
    """Write the Nipype graph (``graph.dot``, and ``graph.svg`` where Graphviz is installed) into
    the work directory before the run, which then goes ahead (fMRIPrep's ``--write-graph``)."""
    clean_workdir: bool = False
    """Empty the work directory before running (fMRIPrep's ``--clean-workdir``)."""
    config_file: Path | None = None
    """The saved ``logs/config-*.toml`` this run started from (``--config-file``); the options
    given on the command line override its values."""
    cmdline: str = ""
    """The command line of this run, as typed (shell-quoted), for the reports."""
    run_uuid: str = field(default_factory=_new_run_uuid)
    """Identifier of this run, used for log and crash directories."""


@dataclass
class NipypeConfig:
    """Resources for the Nipype execution."""

    plugin: str = "MultiProc"
    """Nipype plugin name."""
    plugin_args: dict[str, Any] = field(default_factory=dict)
    """Extra plugin arguments (``--use-plugin`` YAML)."""
    nprocs: int = 0
    """Maximum parallel processes; 0 means all available CPUs."""
    omp_nthreads: int = 0
    """Threads per process; 0 means min(nprocs, 8)."""
    mem_gb: float = 0.0
    """Memory limit for the scheduler in GB; 0 means no limit."""
    n_gpus: int = 0
    """GPUs the scheduler may hand out; filled in at run time."""
    poll_sleep: float = 0.1
    """Seconds between the scheduler's looks for finished nodes (Nipype's
    ``poll_sleep_duration``, 2 s by default there). A participant graph is a chain
    of about 30 short nodes, so Nipype's 2 s cost about 12 s per scan of idle
    waiting (benchmarks/participant_profile.py --poll-sleep). A ``--use-plugin`` file
    may set ``poll_sleep_duration`` among its ``plugin_args``."""
    resource_monitor: bool = False
    """Nipype's resource monitor: each node's peak memory and CPU use, summarised in
    ``logs/resources-<run>.tsv`` (fMRIPrep's ``--resource-monitor``)."""


@dataclass
class SynthesisConfig:
    """How the PSR map is sampled at the participant level."""

    model: Path | None = None
    """Model directory (config.json + safetensors); None uses the embedded demo model."""
    sampler: str = "auto"
    """auto, ddpm, ddim or dpm++; auto picks the fastest option the model qualifies."""
    steps: int = 0
    """Sampling steps; 0 takes the model's recommended value."""
    samples: int = 1
    """Samples per input; more than one adds a per-voxel std map (the spread of the samples)."""
    device: Device = "auto"
    """auto uses CUDA when present, else the CPU."""


@dataclass
class TrainConfig:
    """The ``train`` analysis level."""

    psr_derivatives: Path | None = None
    """Derivatives dataset holding measured ``*_PSRmap`` images (default: BIDS_DIR/derivatives/*)."""
    folds: int = 5
    """Subject-grouped cross-validation folds (1: train on everything, no evaluation)."""
    preset: Literal["paper", "small"] = "small"
    """Network sizes: ``paper`` (the published configuration) or ``small`` (CPU)."""
    backbone: Path | None = None
    """Pretrained backbone weights (BraTS bundle format); None trains one."""
    backbone_autoencoder: Path | None = None
    """The autoencoder the pretrained backbone's latents came from (BraTS bundle format); required
    with ``backbone``: both demist autoencoders start from it (the conditioning one widened to
    T1w+FLAIR), so the frozen prior sees the latent space it was trained on."""
    autoencoders_from: Path | None = None
    """A demist model directory whose trained (and aligned) autoencoders are reused: the ``ae`` and
    ``align`` stages are skipped and only the latent statistics are measured on this cohort."""
    resume: bool = False
    """Continue from the latest checkpoint in the output directory."""
    stage: TrainStage = "all"
    """Run one stage alone."""
    max_steps: int = 0
    """Cap on optimisation steps per stage (0: the preset's default)."""
    recipe: Path | None = None
    """TOML overriding the preset's training recipe (steps, learning rates, loss weights)."""


@dataclass
class SeedsConfig:
    """Random seeds, recorded so a run can be repeated."""

    master: int = 42
    """Seeds the sampler, training and cross-validation splits."""


@dataclass
class Config:
    """All settings of one demist run."""

    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    nipype: NipypeConfig = field(default_factory=NipypeConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain TOML-able dictionary (paths as strings, None dropped)."""
        return _plain(dataclasses.asdict(self))

    def dumps(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def to_filename(self, path: Path) -> Path:
        """Write the TOML atomically and return its path."""
        from demist_bids.utils.atomic import atomic_write_text

        return atomic_write_text(Path(path), self.dumps())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The config from its dictionary form; fields absent keep their defaults.

        Raises:
            ValueError: a section or setting demist does not have, or a value of the wrong type
                (a saved config is checked as strictly as a command line).
        """
        names = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # type: ignore[misc]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"no such section: [{unknown[0]}]")
        sections = {}
        for name, section_cls in names.items():
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise ValueError(f"{name} must be a [{name}] table")
            sections[name] = _load_section(section_cls, section, name)
        return cls(**sections)

    @classmethod
    def load(cls, path: Path) -> Config:
        with open(path, "rb") as fh:
            return cls.from_dict(tomllib.load(fh))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _check_type(value: Any, hint: Any, where: str) -> None:
    """Raise ValueError unless ``value`` (as read from TOML) fits the annotation ``hint``."""
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where} = {value!r}: expected one of {', '.join(map(str, args))}")
        return
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return _check_type(value, kinds[0], where)
    expected = {bool: bool, int: int, float: (int, float), str: str, Path: str,
                list: list, dict: dict}.get(origin or hint)
    if expected is None:
        return
    if (isinstance(value, bool) and hint in (int, float)) or not isinstance(value, expected):
        kind = getattr(origin or hint, "__name__", hint)
        raise ValueError(f"{where} = {value!r}: expected {kind}")
    if origin is list and args:
        for item in value:
            _check_type(item, args[0], where)
    if origin is dict and len(args) == 2:
        for item in value.values():
            _check_type(item, args[1], where)


def _load_section(section_cls: type, data: dict[str, Any], name: str = "") -> Any:
    import typing

    hints = typing.get_type_hints(section_cls)
    fields = {f.name for f in dataclasses.fields(section_cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"[{name}] has no setting {unknown[0]!r}")
    kwargs = {}
    for key, value in data.items():
        _check_type(value, hints[key], f"{name}.{key}" if name else key)
        hint = str(hints[key])
        if "dict[str, pathlib.Path]" in hint:
            value = {k: Path(v) for k, v in value.items()}
        elif "Path" in hint and value is not None:
            value = Path(value)
        kwargs[key] = value
    return section_cls(**kwargs)
