"""Check a model directory before anything is built from it.

``--model`` comes from outside: a file of random bytes reached the synthesis
node as a Nipype ``TraitError``, and a ``config.json`` asking for absurd network
sizes grew a worker to 24 GB before the kernel killed it. :func:`check_model_dir`
refuses such a directory with exit 64, naming the path or field, before any
tensor exists. Cheapest first:

1. layout: a directory holding ``config.json`` and the weights files;
2. ``config.json``: readable, and every size within :data:`LIMITS`
   (:func:`check_model_config`, also run by ``load_model``);
3. the weights files' SHA256 against the ones recorded in ``SHA256SUMS``;
4. the tensor names and shapes in each safetensors header against those of the
   model built on the ``meta`` device, which allocates no storage.

A distilled student (``student/``) is a model directory too and is checked alike.
:func:`check_model` returns what it parsed (:class:`CheckedModel`): a run reads each
``config.json`` once, here, and passes the configurations on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from demist_bids.exceptions import UsageError
from demist_bids.models.config import UNCONDITIONAL_BRANCHES, ModelConfig
from demist_bids.utils.model_files import CONFIG_NAME

LOGGER = logging.getLogger("demist.models")

__all__ = ["LIMITS", "CheckedModel", "check_model", "check_model_config", "check_model_dir"]

REQUIRED_WEIGHTS = ("psr_autoencoder", "cond_autoencoder", "backbone")
"""Weights files every model has; ``streams.safetensors`` too unless it has no stream."""
MAX_CONFIG_BYTES = 16 * 2**20
"""A config.json is a few kB (the demo's, card included, 13 kB)."""

LIMITS: dict[str, tuple[int, int]] = {
    "autoencoder.channels": (1, 1024),
    "autoencoder.levels": (1, 5),
    "autoencoder.latent_channels": (1, 64),
    "autoencoder.num_res_blocks": (1, 8),
    "autoencoder.norm_num_groups": (1, 1024),
    "unet.channels": (1, 1024),
    "unet.levels": (1, 5),
    "unet.num_head_channels": (0, 1024),
    "unet.num_res_blocks": (1, 8),
    "unet.norm_num_groups": (1, 1024),
    "streams.token_grid": (1, 32),
    "streams.token_dim": (1, 1024),
    "streams.cross_attention_heads": (1, 64),
    "streams.lora_rank": (1, 256),
    "streams.hint_layers": (0, 8),
    "streams.token_stride": (0, 64),
    "patch_size": (1, 256),
    "input_channels.count": (1, 8),
    "schedule.num_train_timesteps": (1, 10000),
    "sampling.steps": (0, 10000),
    "sampling.distilled_steps": (0, 10000),
}
"""Inclusive (low, high) bounds of each size. The paper preset's largest values are
512 channels, 3 levels, an 8-channel latent, 2 res blocks, a 4^3 token grid of width
256, 4 heads, LoRA rank 8 and 96^3 patches; these bounds sit far above them and far
below what exhausts a machine. ``levels`` is the length of ``channels``."""


def _fail(source: Path, field: str, value, rule: str) -> UsageError:
    return UsageError(f"{source}: field {field} = {value!r} is not a sane model size: {rule}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ints(source: Path, field: str, value, *, length: int | None = None) -> None:
    """``value`` is an int (or a list of ints, of ``length`` if given) within ``LIMITS[field]``."""
    low, high = LIMITS[field]
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and length is not None and len(value) != length:
        raise _fail(source, field, value, f"it needs {length} values")
    if not all(_is_int(v) and low <= v <= high for v in values):
        raise _fail(source, field, value, f"each must be an integer from {low} to {high}")


def check_model_config(config: ModelConfig, source: Path) -> None:
    """Refuse a configuration whose sizes are far beyond any preset, before anything is built.

    Args:
        config: the parsed ``config.json``.
        source: the file it came from, named in the message.

    Raises:
        UsageError: ``"<source>: field <name> = <value> is not a sane model size: <rule>"``.
    """
    for name in ("autoencoder", "unet"):
        section = getattr(config, name)
        channels = section.channels
        if not isinstance(channels, list):
            raise _fail(source, f"{name}.channels", channels, "it must be a list of integers")
        low, high = LIMITS[f"{name}.levels"]
        if not low <= len(channels) <= high:
            raise _fail(source, f"{name}.channels", channels,
                        f"{len(channels)} levels; from {low} to {high} are allowed")
        _check_ints(source, f"{name}.channels", channels)
        for field in ("num_res_blocks", "norm_num_groups"):
            _check_ints(source, f"{name}.{field}", getattr(section, field))
    _check_ints(source, "autoencoder.latent_channels", config.autoencoder.latent_channels)
    levels = len(config.unet.channels)
    _check_ints(source, "unet.num_head_channels", config.unet.num_head_channels, length=levels)
    attention = config.unet.attention_levels
    if not (isinstance(attention, list) and len(attention) == levels
            and all(isinstance(a, bool) for a in attention)):
        raise _fail(source, "unet.attention_levels", attention, f"it needs {levels} true/false values")
    streams = config.streams
    _check_ints(source, "streams.token_grid", streams.token_grid, length=3)
    for field in ("token_dim", "cross_attention_heads", "lora_rank", "hint_layers", "token_stride"):
        _check_ints(source, f"streams.{field}", getattr(streams, field))
    _check_ints(source, "patch_size", config.patch_size, length=3)
    inputs = config.input_channels
    low, high = LIMITS["input_channels.count"]
    if not (isinstance(inputs, list) and low <= len(inputs) <= high):
        raise _fail(source, "input_channels", inputs, f"from {low} to {high} channel names")
    _check_ints(source, "schedule.num_train_timesteps", config.schedule.num_train_timesteps)
    for field in ("steps", "distilled_steps"):
        _check_ints(source, f"sampling.{field}", getattr(config.sampling, field))
    if config.sampling.unconditional not in UNCONDITIONAL_BRANCHES:
        raise UsageError(f"{source}: field sampling.unconditional = {config.sampling.unconditional!r}: "
                         f"expected one of {', '.join(UNCONDITIONAL_BRANCHES)}")


def _layout_error(directory: Path, what: str) -> UsageError:
    return UsageError(
        f"--model {directory}: {what}; a model directory holds config.json and the weights "
        f"{', '.join(f'{n}.safetensors' for n in REQUIRED_WEIGHTS)} (and streams.safetensors), "
        "as `demist ... train` writes to OUTPUT_DIR/model"
    )


def _read_config(directory: Path) -> ModelConfig:
    path = directory / CONFIG_NAME
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise UsageError(f"{path}: {size:,} bytes is not a model configuration (a few kB)")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        return ModelConfig.from_dict(data)
    except Exception as exc:  # not UTF-8, not JSON, unknown keys, wrong types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path}: not a demist model configuration ({first})") from exc


def _check_checksums(directory: Path, names: list[str]) -> None:
    """Each weights file's SHA256 equals the one recorded when it was saved."""
    from demist_bids.utils.model_files import WEIGHTS_SUMS, file_sha256, read_weights_sums

    try:
        recorded = read_weights_sums(directory)
    except ValueError as exc:
        raise UsageError(f"{exc}; refusing the model") from exc
    if recorded is None:
        LOGGER.warning("%s records no weights checksums (%s; saved by an older demist): "
                       "their integrity is not checked", directory, WEIGHTS_SUMS)
        return
    for name in names:
        path = directory / name
        if name not in recorded:
            raise UsageError(f"{path}: not listed in {directory / WEIGHTS_SUMS}; refusing the model")
        actual = file_sha256(path)
        if actual != recorded[name]:
            raise UsageError(
                f"{path}: its SHA256 {actual[:16]}... differs from the {recorded[name][:16]}... "
                f"recorded in {WEIGHTS_SUMS} (a damaged or altered file); refusing the model"
            )


def _expected_shapes(config: ModelConfig, source: Path) -> dict[str, dict[str, list[int]]]:
    """Tensor shapes per weights file of the model ``config`` describes, built on ``meta``."""
    import torch

    from demist_bids.models.demist import build_model
    from demist_bids.models.io import component_states

    try:
        with torch.device("meta"):
            model = build_model(config)
    except Exception as exc:  # inconsistent sizes: groups not dividing channels, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{source}: the networks it describes cannot be built ({first})") from exc
    return {name: {key: list(t.shape) for key, t in state.items()}
            for name, state in component_states(model).items()}


def _check_shapes(path: Path, expected: dict[str, list[int]]) -> None:
    """The safetensors header of ``path`` holds exactly the ``expected`` names and shapes."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            found = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:  # SafetensorError for anything that is not a safetensors file
        raise UsageError(f"{path}: not a safetensors weights file ({exc})") from exc
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [k for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
    if missing or unexpected or wrong:
        details = [f"{k} has shape {found[k]}, config.json asks for {expected[k]}" for k in wrong[:3]]
        if missing:
            details.append(f"{len(missing)} tensors missing (first {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} tensors not in config.json (first {unexpected[0]})")
        raise UsageError(f"{path}: the weights do not match config.json: {'; '.join(details)}")


@dataclass(frozen=True)
class CheckedModel:
    """A model directory that passed :func:`check_model`, with the configuration parsed from its
    ``config.json`` (and its distilled student's): pass these on instead of reading again."""

    directory: Path
    config: ModelConfig
    student: CheckedModel | None = None

    @property
    def configs(self) -> dict[Path, ModelConfig]:
        """Directory -> parsed configuration, the student's included."""
        return {self.directory: self.config, **(self.student.configs if self.student else {})}


def check_model(directory: Path) -> CheckedModel:
    """Refuse a model directory that cannot be loaded safely; nothing is allocated.

    Args:
        directory: what ``--model`` points at (or the embedded demo model).

    Returns:
        The directory with its parsed configuration and its student's (each
        ``config.json`` read once).

    Raises:
        UsageError: naming the path and what is wrong: not a directory, no
            config.json or weights, a size beyond :data:`LIMITS` (naming the
            field), a checksum differing from ``SHA256SUMS``, or weights whose
            tensors do not match the configuration.
    """
    directory = Path(directory)
    try:
        config = _check_files(directory)
    except OSError as exc:  # unreadable files: permissions, I/O errors
        raise UsageError(f"--model {directory}: cannot be read ({exc})") from exc
    from demist_bids.utils.model_files import student_dir

    student = student_dir(directory)
    return CheckedModel(directory, config, check_model(student) if student is not None else None)


def check_model_dir(directory: Path) -> ModelConfig:
    """:func:`check_model`, for callers that only want the configuration."""
    return check_model(directory).config


def _check_files(directory: Path) -> ModelConfig:
    """Layout, config.json, checksums and tensor shapes of one directory, cheapest first."""
    if not directory.is_dir():
        raise _layout_error(directory, "not a directory")
    absent = [n for n in (CONFIG_NAME, *(f"{w}.safetensors" for w in REQUIRED_WEIGHTS))
              if not (directory / n).is_file()]
    if absent:
        raise _layout_error(directory, f"it has no {', '.join(absent)}")
    config = _read_config(directory)
    check_model_config(config, directory / CONFIG_NAME)
    expected = _expected_shapes(config, directory / CONFIG_NAME)
    names = [f"{name}.safetensors" for name in expected]
    streams = directory / "streams.safetensors"
    if "streams" not in expected and streams.exists():
        raise UsageError(f"{streams}: config.json has no conditioning stream for these weights")
    for name in names:
        if not (directory / name).is_file():
            raise _layout_error(directory, f"it has no {name}")
    _check_checksums(directory, names)
    for name, shapes in expected.items():
        _check_shapes(directory / f"{name}.safetensors", shapes)
    return config
