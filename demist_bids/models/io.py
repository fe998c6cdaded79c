"""One model format: a directory of ``config.json`` plus per-component safetensors.

Layout::

    MODEL_DIR/
      config.json                 ModelConfig (architecture, scales, schedule, sampler, card, version)
      psr_autoencoder.safetensors
      cond_autoencoder.safetensors
      backbone.safetensors        plain MONAI DiffusionModelUNet keys, adapters excluded
      streams.safetensors         semantic.*, controlnet.*, skip.*, backbone.*lora_* (absent with no stream)
      SHA256SUMS                  the weights files' SHA256 (sha256sum format)

Nothing is unpickled when loading; :mod:`demist_bids.models.validation` checks a
directory (sizes, checksums, tensor shapes) before anything is built from it. A
directory is written to a temporary sibling and renamed into place, so readers
never see half a model. Bundle
(MONAI GenerativeModels) ``.pt`` weights are read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from demist_bids.models.config import ModelConfig
from demist_bids.models.demist import DemistModel, build_model
from demist_bids.models.unet import (
    convert_old_state_dict,
    is_adapter_key,
    load_plain_state_dict,
    plain_state_dict,
)
from demist_bids.utils.model_files import CONFIG_NAME, directory_sha256

LOGGER = logging.getLogger("demist.models")

__all__ = [
    "save_model",
    "load_model",
    "component_states",
    "read_model_config",
    "write_model_config",
    "load_backbone_weights",
    "load_autoencoder_weights",
]

_AUTOENCODERS = ("psr_autoencoder", "cond_autoencoder")
_STREAM_MODULES = ("semantic", "controlnet", "skip")
"""Modules whose whole state goes in ``streams.safetensors`` (``skip``: ``StreamsConfig.condition_skip``)."""


def component_states(model: DemistModel) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of each weights file (``<name>.safetensors``), as :func:`save_model` writes them."""
    states = {name: getattr(model, name).state_dict() for name in _AUTOENCODERS}
    states["backbone"] = plain_state_dict(model.backbone)
    streams = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items() if is_adapter_key(k)}
    for name in _STREAM_MODULES:
        module = getattr(model, name)
        if module is not None:
            streams.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    if streams:
        states["streams"] = streams
    return states


WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_model(
    model: DemistModel, directory: Path, card: dict[str, Any] | None = None, *, weights: str = "float32"
) -> Path:
    """Write ``model`` as a model directory, atomically.

    Args:
        model: the model to save.
        directory: destination; replaced if it exists.
        card: model-card entries merged into ``config.card``.
        weights: storage type of floating-point weights. ``float16`` halves the files
            (the embedded demo model ships so); :func:`load_model` always returns
            float32 parameters, since ``load_state_dict`` casts on copy.

    Returns:
        ``directory``.
    """
    from safetensors.torch import save_file

    from demist_bids import __version__
    from demist_bids.utils.model_files import write_weights_sums

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.from_dict(model.config.to_dict())
    config.card = {**config.card, **(card or {})}
    config.demist_version = __version__
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, state in component_states(model).items():
            tensors = {
                k: (v.to(WEIGHT_DTYPES[weights]) if v.is_floating_point() else v).detach().cpu().contiguous()
                for k, v in state.items()
            }
            # one metadata entry only: safetensors writes a map's keys in random order,
            # and the directory checksum must not change between identical saves
            save_file(tensors, str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
        write_weights_sums(tmp)
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        old = None
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex}"
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.info("saved model to %s (sha256 %s)", directory, directory_sha256(directory)[:12])
    return directory


def read_model_config(directory: Path) -> ModelConfig:
    """The configuration of a model directory, without loading weights or torch."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a demist model directory")
    return ModelConfig.from_dict(json.loads(path.read_text()))


def write_model_config(directory: Path, config: ModelConfig) -> Path:
    """Replace a model directory's ``config.json`` atomically (weights untouched).

    For settings that do not change the architecture, such as the recommended
    sampler after a benchmark; the directory checksum changes with it.
    """
    from demist_bids.utils.atomic import atomic_write_text

    current = read_model_config(directory)
    if _architecture(current) != _architecture(config):
        raise ValueError("write_model_config cannot change the architecture; save the model instead")
    return atomic_write_text(Path(directory) / CONFIG_NAME, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def _architecture(config: ModelConfig) -> tuple:
    return (config.autoencoder, config.unet, config.streams, config.input_channels)


def load_model(directory: Path, device: str = "cpu", *, config: ModelConfig | None = None) -> DemistModel:
    """Rebuild a model from its directory (strict: every weight must be present and used).

    Args:
        directory: a directory written by :func:`save_model`.
        device: where to put the model.
        config: its configuration, already parsed and checked
            (:func:`demist_bids.models.validation.check_model`); read and checked here
            when not given.

    Returns:
        The model in eval mode, backbone frozen.

    Raises:
        UsageError: ``config.json`` asks for sizes beyond any sane model (nothing is allocated).
    """
    from safetensors.torch import load_file

    from demist_bids.models.validation import check_model_config

    directory = Path(directory)
    if config is None:
        config = read_model_config(directory)
        check_model_config(config, directory / CONFIG_NAME)
    model = build_model(config)
    for name in _AUTOENCODERS:
        getattr(model, name).load_state_dict(load_file(str(directory / f"{name}.safetensors")))
    load_plain_state_dict(model.backbone, load_file(str(directory / "backbone.safetensors")))
    streams_file = directory / "streams.safetensors"
    streams = load_file(str(streams_file)) if streams_file.exists() else {}
    expected = component_states(model).get("streams", {})
    if set(streams) != set(expected):
        raise KeyError(
            f"stream weights do not match the config: missing {sorted(set(expected) - set(streams))[:5]}, "
            f"unexpected {sorted(set(streams) - set(expected))[:5]}"
        )
    adapters = {k.removeprefix("backbone."): v for k, v in streams.items() if k.startswith("backbone.")}
    model.backbone.load_state_dict(adapters, strict=False)
    for name in _STREAM_MODULES:
        module = getattr(model, name)
        if module is not None:
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in streams.items() if k.startswith(prefix)})
    return model.to(device).eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for nested in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    return dict(state)


def load_backbone_weights(model: DemistModel, path: Path) -> None:
    """Fill the backbone from a BraTS-bundle (old-key) ``.pt`` or a plain-key file, then re-seed the ControlNet.

    Args:
        model: the model to update in place.
        path: ``model_brats_mri_generative_diffusion_v1.pt`` (or a plain
            MONAI 1.5+ state dict as ``.pt``/``.safetensors``).
    """
    state = _read_state_dict(path)
    plain_keys = set(plain_state_dict(model.backbone))
    if set(state) != plain_keys:
        if model.predicts_velocity:
            raise ValueError(f"{path}: the BraTS bundle's backbone predicts epsilon, but the model is "
                             "configured for v_prediction (schedule.prediction_type)")
        latent = model.config.autoencoder.latent_channels
        state = convert_old_state_dict(model.config.unet, latent, state)
    load_plain_state_dict(model.backbone, state)
    model.sync_controlnet_from_backbone()
    LOGGER.info("loaded backbone weights from %s", path)


def load_autoencoder_weights(model: DemistModel, path: Path) -> None:
    """Start both autoencoders from one (bundle) autoencoder, widening the conditioning one.

    The bundle's FLAIR autoencoder has one input/output channel; the
    conditioning autoencoder takes T1w+FLAIR. Its first convolution gets the
    1-channel kernel divided over the channels (so a constant image encodes as
    before) and its last convolution repeats the single output channel.
    """
    from monai.networks.nets import AutoencoderKL

    from demist_bids.models.autoencoders import build_autoencoder

    state = _read_state_dict(path)
    single: AutoencoderKL = build_autoencoder(model.config.autoencoder, 1)
    if set(state) == set(single.state_dict()):
        single.load_state_dict(state)
    else:
        single.load_old_state_dict(state)
    single_state = single.state_dict()
    model.psr_autoencoder.load_state_dict(single_state)
    channels = len(model.config.input_channels)
    widened = {}
    for key, target in model.cond_autoencoder.state_dict().items():
        value = single_state[key]
        if value.shape != target.shape:
            if key.startswith("encoder"):
                value = value.repeat_interleave(channels, dim=1) / channels
            else:
                value = value.repeat_interleave(channels, dim=0)
        widened[key] = value
    model.cond_autoencoder.load_state_dict(widened)
    LOGGER.info("initialised both autoencoders from %s", path)
