"""The BIDS-App command line: ``demist BIDS_DIR OUTPUT_DIR {participant,group,train}``.

argparse, not Typer, parses this entry point: the BIDS-App convention needs
variable-length options (``--participant-label 01 02``), which Click/Typer
cannot express. Only the standard library is imported here so that ``--help``
and ``--version`` answer instantly; checks that need the file system run in
:func:`parse_args` and raise :class:`~demist_bids.exceptions.DemistError`.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from demist_bids import __version__
from demist_bids.config import Config, ExecutionConfig
from demist_bids.exceptions import (
    BIDSValidationError,
    UnknownAnalysisLevelError,
    UsageError,
)

ANALYSIS_LEVELS = ("participant", "group", "train")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with EX_USAGE (64), per the BIDS execution spec."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


SAMPLER_CHOICES = ("auto", "ddpm", "ddim", "dpm++", "distilled")
"""``--sampler``: :data:`~demist_bids.inference.schedulers.SAMPLERS` (not imported: it needs torch,
and ``--help`` must not), plus ``auto`` and ``distilled``; a test keeps the two in step."""


def _label_list(values: list[str], prefix: str) -> list[str]:
    """Strip ``sub-``/``ses-`` prefixes, split commas, drop duplicates, keep order."""
    out: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            label = item[len(prefix) :] if item.startswith(prefix) else item
            if not re.fullmatch(r"[0-9A-Za-z]+", label):
                raise UsageError(f"invalid label {item!r}: BIDS labels are alphanumeric")
            if label not in out:
                out.append(label)
    return out


def _derivative_pair(value: str) -> tuple[str, Path]:
    if "=" in value:
        name, path = value.split("=", 1)
    else:
        path = value
        name = Path(value).name
    return name, Path(path).expanduser().absolute()


def _memory_gb(value: str) -> float:
    """``--mem``: a number in MB (NiPreps convention) or with a unit (``16G``, ``16GB``, ``800M``)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)B?\s*", value.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read memory amount {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "M"
    return number * {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[unit]


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def device_name(value: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (one GPU of several)."""
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from auto, cpu, cuda, cuda:N)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse object; cheap to build (standard library only)."""
    parser = _Parser(
        prog="demist",
        description=(
            f"demist {__version__}: synthesize qMT pool-size-ratio (PSR) myelin maps from "
            "T1w and FLAIR with the DEMIST latent diffusion model."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path,
                        help="root of the input BIDS dataset (group level: optional, read for "
                             "participants.tsv; pass OUTPUT_DIR again to use the derivatives alone)")
    parser.add_argument("output_dir", type=Path, help="root of the output derivatives dataset")
    parser.add_argument(
        "analysis_level",
        help="participant (synthesize per subject), group (cohort QC), or train (fit a model)",
    )
    parser.add_argument("--version", action="version", version=f"demist v{__version__}")
    parser.add_argument(
        "-v", "--verbose", dest="verbosity", action="count", default=0,
        help="more log output (repeat for more)",
    )

    g = parser.add_argument_group("Selecting the data")
    g.add_argument(
        "--participant-label", "--participant_label", dest="participant_label", nargs="+",
        default=[], metavar="LABEL", help="subjects to process (space-separated, 'sub-' optional)",
    )
    g.add_argument(
        "--session-label", "--session_label", dest="session_label", nargs="+", default=[],
        metavar="LABEL", help="sessions to process (space-separated, 'ses-' optional)",
    )
    g.add_argument(
        "--bids-filter-file", "--bids_filter_file", dest="bids_filter_file", type=Path,
        metavar="FILE",
        help='JSON with pybids filters for the "t1w" and "flair" queries, overriding the defaults',
    )
    g.add_argument(
        "-d", "--derivatives", nargs="+", default=[], metavar="NAME=PATH",
        help="other derivatives: smriprep=PATH (brain mask), lesions=PATH (lesion masks)",
    )
    g.add_argument(
        "--skip-bids-validation", "--skip_bids_validation", "--skip_bids_validator",
        dest="skip_bids_validation", action="store_true",
        help="do not validate the input dataset with bids-validator-deno",
    )

    g = parser.add_argument_group("Resources and execution")
    g.add_argument("-w", "--work-dir", "--work_dir", dest="work_dir", type=Path,
                   help="Nipype cache and pybids index (default: ./work)")
    g.add_argument("--nprocs", "--nthreads", "--n_cpus", "--n-cpus", dest="nprocs", type=int,
                   default=0, help="maximum parallel processes (0: all CPUs)")
    g.add_argument("--omp-nthreads", "--omp_nthreads", dest="omp_nthreads", type=int,
                   default=0, help="threads per process (0: automatic)")
    g.add_argument("--mem", "--mem-mb", "--mem_mb", dest="mem_gb", type=_memory_gb, default=0.0,
                   help="memory limit (MB, or with a unit such as 16G)")
    g.add_argument("--use-plugin", "--use_plugin", dest="use_plugin", type=Path, metavar="FILE",
                   help="Nipype plugin configuration (YAML)")
    g.add_argument("--stop-on-first-crash", dest="stop_on_first_crash", action="store_true",
                   help="abort at the first failing node")
    g.add_argument("--boilerplate-only", "--boilerplate_only", dest="boilerplate_only",
                   action="store_true", help="write the citation boilerplate and stop")
    g.add_argument("--reports-only", "--reports_only", dest="reports_only", action="store_true",
                   help="rebuild the subject reports and the dataset-level files from the outputs "
                        "already in OUTPUT_DIR; nothing is recomputed")
    g.add_argument("--config-file", "--config_file", dest="config_file", type=Path, metavar="FILE",
                   help="rerun with the settings of a saved OUTPUT_DIR/logs/config-*.toml; options "
                        "given on this command line override the file")
    g.add_argument("--write-graph", "--write_graph", dest="write_graph", action="store_true",
                   help="write the workflow graph (graph.dot; graph.svg with Graphviz) into the "
                        "work directory, then run")
    g.add_argument("--clean-workdir", "--clean_workdir", dest="clean_workdir", action="store_true",
                   help="empty the work directory before running (no cached results are reused)")
    g.add_argument("--resource-monitor", "--resource_monitor", dest="resource_monitor",
                   action="store_true",
                   help="measure each node's memory and CPU use (Nipype's resource monitor); "
                        "summary in OUTPUT_DIR/logs/resources-<run>.tsv")
    g.add_argument("--notrack", action="store_true",
                   help="accepted for NiPreps compatibility; demist never sends telemetry")
    g.add_argument("--max-image-voxels", "--max_image_voxels", dest="max_image_voxels",
                   type=_positive_int, default=ExecutionConfig.max_image_voxels, metavar="N",
                   help="refuse input images whose header declares more voxels (exit 65)")
    g.add_argument("--output-spaces", "--output_spaces", dest="output_spaces", nargs="*",
                   default=[], metavar="SPACE",
                   help="output spaces besides the native T1w grid (NiPreps syntax): 'model' "
                        "(the 1 mm RAS grid the model used) and TemplateFlow templates with an "
                        "optional resolution, e.g. MNI152NLin2009cAsym:res-2 (default res-1)")

    g = parser.add_argument_group("Synthesis (participant level)")
    g.add_argument("--model", type=Path, help="model directory (default: the embedded demo model)")
    g.add_argument("--sampler", default="auto", choices=SAMPLER_CHOICES,
                   help="sampling algorithm (auto: the model's distilled student when it has one, else "
                        "its recommended sampler; a scheduler name runs the model itself)")
    g.add_argument("--steps", type=int, default=0, help="sampling steps (0: the model's default)")
    g.add_argument("--samples", type=_positive_int, default=1,
                   help="samples per scan; more than one adds a per-voxel std map (the spread of the "
                        "samples, not a calibrated error estimate)")
    g.add_argument("--seed", "--random-seed", "--random_seed", dest="seed", type=int, default=42,
                   help="random seed for sampling, training and splits")
    g.add_argument("--device", default="auto", type=device_name, metavar="{auto,cpu,cuda,cuda:N}",
                   help="where the model runs (cuda:N: the N-th GPU)")

    g = parser.add_argument_group("Training (train level)")
    g.add_argument("--psr-derivatives", "--psr_derivatives", dest="psr_derivatives", type=Path,
                   help="derivatives dataset with measured *_PSRmap images")
    g.add_argument("--folds", type=_positive_int, default=5, help="subject-grouped CV folds")
    g.add_argument("--preset", default="small", choices=("paper", "small"),
                   help="network sizes")
    g.add_argument("--backbone", type=Path,
                   help="pretrained BraTS diffusion backbone weights (MONAI bundle .pt)")
    g.add_argument("--backbone-autoencoder", "--backbone_autoencoder", dest="backbone_autoencoder", type=Path,
                   help="the autoencoder of --backbone (MONAI bundle .pt); required with --backbone")
    g.add_argument("--autoencoders-from", "--autoencoders_from", dest="autoencoders_from", type=Path,
                   metavar="MODEL_DIR", help="reuse a demist model's trained autoencoders (skips ae and align)")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    g.add_argument("--stage", default="all",
                   choices=("all", "ae", "align", "backbone", "diffusion", "regressor", "eval", "distill"),
                   help="run one training stage alone")
    g.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int, default=0,
                   help="cap on optimisation steps per stage (0: the preset's default)")
    g.add_argument("--train-recipe", "--train_recipe", dest="train_recipe", type=Path,
                   metavar="FILE", help="TOML overriding the preset's training recipe")
    return parser


def _is_relative_to(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
    except ValueError:
        return False
    return True


def _load_plugin(path: Path) -> tuple[str, dict]:
    import yaml  # nipype depends on PyYAML; only loaded when the option is used

    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--use-plugin {path}: cannot read it ({exc})") from exc
    if "plugin" not in settings:
        raise UsageError(f"--use-plugin {path}: it has no 'plugin' key")
    return settings["plugin"], dict(settings.get("plugin_args") or {})


def parse_args(argv: list[str] | None = None) -> Config:
    """Parse and check the command line; return the run's :class:`Config`.

    Raises:
        UsageError: bad options, output == input, work dir inside the input (64).
        UnknownAnalysisLevelError: analysis level not recognised (17).
        BIDSValidationError: the input dataset does not exist or is not BIDS (16).
    """
    opts = build_parser().parse_args(argv)
    if opts.analysis_level not in ANALYSIS_LEVELS:
        raise UnknownAnalysisLevelError(
            f"unknown analysis level {opts.analysis_level!r}; "
            f"choose one of {', '.join(ANALYSIS_LEVELS)}"
        )
    saved = _apply_config_file(opts, argv) if opts.config_file is not None else None

    bids_dir = opts.bids_dir.expanduser().absolute()
    output_dir = opts.output_dir.expanduser().absolute()
    work_dir = (opts.work_dir or Path.cwd() / "work").expanduser().absolute()
    from demist_bids.bids import raw_dataset

    # The group level reads the derivatives; a raw dataset is optional there.
    needs_raw = opts.analysis_level != "group" or raw_dataset(bids_dir, output_dir) is not None
    if needs_raw and not bids_dir.is_dir():
        raise BIDSValidationError(f"input dataset {bids_dir} does not exist or is not a directory")
    if needs_raw and not (bids_dir / "dataset_description.json").is_file():
        raise BIDSValidationError(
            f"{bids_dir} is not a BIDS dataset: it has no dataset_description.json"
        )
    bids_real, out_real = bids_dir.resolve(), output_dir.resolve()
    if needs_raw and out_real == bids_real:
        raise UsageError("the output directory must not be the input dataset itself")
    if needs_raw and _is_relative_to(out_real, bids_real) and not _is_relative_to(
        out_real, bids_real / "derivatives"
    ):
        raise UsageError(
            f"the output directory {output_dir} lies inside the input dataset; "
            "put it under derivatives/ or outside the dataset"
        )
    if needs_raw and _is_relative_to(work_dir.resolve(), bids_real):
        raise UsageError(
            f"the work directory {work_dir} lies inside the input dataset; pass -w elsewhere"
        )
    if opts.clean_workdir:
        for name, path in (("output directory", out_real), ("input dataset", bids_real)):
            if _is_relative_to(path, work_dir.resolve()):
                raise UsageError(f"--clean-workdir would delete the {name} {path}: it lies "
                                 f"inside the work directory {work_dir}")
    if opts.reports_only and opts.analysis_level == "train":
        raise UsageError("--reports-only applies to the participant and group levels")

    derivatives = dict(_derivative_pair(v) for v in opts.derivatives)
    for name, path in derivatives.items():
        if not path.is_dir():
            raise UsageError(f"--derivatives {name}={path}: no such directory")
    if opts.bids_filter_file is not None:
        from demist_bids.bids import read_bids_filters

        read_bids_filters(opts.bids_filter_file)  # fail early on bad JSON
    if opts.model is not None and not opts.model.exists():
        raise UsageError(f"--model {opts.model}: no such file or directory")

    config = Config()
    ex = config.execution
    ex.bids_dir, ex.output_dir, ex.work_dir = bids_dir, output_dir, work_dir
    ex.analysis_level = opts.analysis_level
    ex.participant_label = _label_list(opts.participant_label, "sub-")
    ex.session_label = _label_list(opts.session_label, "ses-")
    ex.bids_filter_file = opts.bids_filter_file and opts.bids_filter_file.absolute()
    ex.derivatives = derivatives
    ex.skip_bids_validation = opts.skip_bids_validation
    ex.boilerplate_only = opts.boilerplate_only
    ex.stop_on_first_crash = opts.stop_on_first_crash
    from demist_bids.utils.spaces import parse_output_spaces

    ex.output_spaces = [str(space) for space in parse_output_spaces(opts.output_spaces)]
    ex.max_image_voxels = opts.max_image_voxels
    ex.verbosity = opts.verbosity
    ex.reports_only, ex.write_graph = opts.reports_only, opts.write_graph
    ex.clean_workdir = opts.clean_workdir
    ex.config_file = opts.config_file and opts.config_file.absolute()

    ny = config.nipype
    ny.nprocs = opts.nprocs or (os.cpu_count() or 1)
    ny.omp_nthreads = opts.omp_nthreads or min(ny.nprocs, 8)
    ny.mem_gb = opts.mem_gb
    if opts.use_plugin is not None:
        ny.plugin, ny.plugin_args = _load_plugin(opts.use_plugin)
    elif saved is not None:
        ny.plugin, ny.plugin_args = saved.nipype.plugin, dict(saved.nipype.plugin_args)
    ny.resource_monitor = opts.resource_monitor

    sy = config.synthesis
    sy.model = opts.model and opts.model.absolute()
    sy.sampler, sy.steps, sy.samples, sy.device = opts.sampler, opts.steps, opts.samples, opts.device

    tr = config.train
    tr.psr_derivatives = opts.psr_derivatives and opts.psr_derivatives.absolute()
    tr.folds, tr.preset, tr.resume, tr.stage = opts.folds, opts.preset, opts.resume, opts.stage
    tr.backbone = opts.backbone and opts.backbone.absolute()
    tr.backbone_autoencoder = opts.backbone_autoencoder and opts.backbone_autoencoder.absolute()
    tr.autoencoders_from = opts.autoencoders_from and opts.autoencoders_from.absolute()
    if tr.backbone is not None and tr.backbone_autoencoder is None:
        raise UsageError("--backbone needs --backbone-autoencoder: the frozen prior only knows the latent "
                         "space of its own autoencoder")
    if tr.backbone_autoencoder is not None and tr.backbone is None:
        raise UsageError("--backbone-autoencoder is only used with --backbone")
    if tr.autoencoders_from is not None and tr.backbone is not None:
        raise UsageError("--autoencoders-from and --backbone exclude each other (the backbone needs its "
                         "own autoencoder)")
    for option, path in (("--backbone", tr.backbone), ("--backbone-autoencoder", tr.backbone_autoencoder)):
        if path is not None and not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
    if tr.autoencoders_from is not None and not (tr.autoencoders_from / "config.json").is_file():
        raise UsageError(f"--autoencoders-from {tr.autoencoders_from}: not a demist model directory "
                         "(config.json and the *.safetensors weights)")
    tr.max_steps = opts.max_steps
    if opts.train_recipe is not None:
        if not opts.train_recipe.is_file():
            raise UsageError(f"--train-recipe {opts.train_recipe}: no such file")
        from demist_bids.training.recipes import load_recipe  # imports no torch

        try:  # a typo or a meaningless combination fails here, not hours into training
            load_recipe(tr.preset, opts.train_recipe)
        except ValueError as error:  # includes TOML syntax errors
            raise UsageError(f"--train-recipe {opts.train_recipe}: {error}".replace("\n", " ")) from None
        tr.recipe = opts.train_recipe.absolute()
    config.seeds.master = opts.seed
    return config


_RENAMED_OPTIONS = {"seed": ("seeds", "master"), "train_recipe": ("train", "recipe")}
"""Options whose config field has another name; the others share their field's name."""
_NOT_SAVED = {"bids_dir", "output_dir", "analysis_level", "config_file", "use_plugin", "help",
              "version"}
"""Options never taken from a saved config: the positional arguments (always given), the file
itself, the plugin (taken as plugin + plugin_args) and the informational actions."""


def _config_field(dest: str) -> tuple[str, str] | None:
    """The (section, field) of :class:`Config` that option ``dest`` sets."""
    import dataclasses

    if dest in _RENAMED_OPTIONS:
        return _RENAMED_OPTIONS[dest]
    for section in dataclasses.fields(Config):
        if dest in {f.name for f in dataclasses.fields(section.default_factory)}:
            return section.name, dest
    return None


def _given_options(argv: list[str] | None) -> set[str]:
    """The options written on the command line (not left at their defaults)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _apply_config_file(opts: argparse.Namespace, argv: list[str] | None) -> Config:
    """``--config-file``: fill every option not given on the command line from the saved config.

    As in fMRIPrep, the file's values are the base and the command line overrides
    them; the checks that follow apply to the merged settings. A new run id is
    always drawn.

    Raises:
        UsageError: the file cannot be read, is not a demist configuration, or is the
            configuration of another analysis level (64).
    """
    import tomllib

    path = opts.config_file
    where = f"--config-file {path}"
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        saved = Config.from_dict(raw)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise UsageError(f"{where}: cannot read it as a demist configuration ({reason})") from exc
    level = raw.get("execution", {}).get("analysis_level")
    if level is not None and level != opts.analysis_level:
        raise UsageError(f"{where} is the configuration of a {level} run, not of the "
                         f"{opts.analysis_level} level asked for")
    given = _given_options(argv)
    for dest in vars(opts):
        if dest in given or dest in _NOT_SAVED:
            continue
        place = _config_field(dest)
        if place is None or place[1] not in raw.get(place[0], {}):
            continue
        value = getattr(getattr(saved, place[0]), place[1])
        if dest == "derivatives":
            value = [f"{name}={p}" for name, p in value.items()]
        setattr(opts, dest, value)
    return saved


