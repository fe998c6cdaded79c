"""The Python API: one T1w/FLAIR pair to a PSR map, no BIDS dataset needed.

:func:`synthesize_pair` checks the two images the way the participant level
does, then runs the participant level's own workflow
(:func:`~demist_bids.workflows.synthesis.init_synthesis_wf`: preprocessing,
sampler, return to the T1w grid) in a scratch folder and hands back the maps
as in-memory nibabel images with the sidecar the participant level would
write. ``demist-synth`` (:mod:`demist_bids.cli.synth`) is its command line.

Everything heavy is imported inside the functions: ``import demist_bids``
stays as light as ``demist --help``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demist_bids.exceptions import BadDataError, MissingInputError

LOGGER = logging.getLogger("demist.api")

PAIR_FILES = {"metadata": "PSRmap.json", "psr": "PSRmap.nii.gz", "std": "std.nii.gz",
              "mask": "mask.nii.gz"}
"""``OUT_PREFIX_<name>`` of each file :meth:`PSRResult.save` writes (sidecar first)."""


class InvalidImageError(BadDataError, ValueError):
    """An input image of :func:`synthesize_pair` cannot be used (exit 65 on the command line)."""


class InputNotFoundError(MissingInputError, FileNotFoundError):
    """An input file of :func:`synthesize_pair` does not exist (exit 66 on the command line)."""


@dataclass
class PSRResult:
    """A synthesized PSR map on the T1w's grid, with its uncertainty, brain mask and sidecar."""

    psr: Any
    """``nibabel.Nifti1Image``: PSR (dimensionless ratio), 0 outside the brain."""
    std: Any | None
    """Per-voxel standard deviation across samples; None with one sample."""
    mask: Any
    """The brain mask used (uint8)."""
    metadata: dict = field(default_factory=dict)
    """The PSR map's JSON sidecar: sources, model, sampler, QC, the inputs' acquisition."""

    def save(self, prefix: str | Path) -> list[Path]:
        """Write ``PREFIX_PSRmap.nii.gz`` (+ ``.json``), ``PREFIX_std.nii.gz`` (with several
        samples) and ``PREFIX_mask.nii.gz``, all appearing together or not at all."""
        import nibabel as nib

        from demist_bids.derivatives.writer import write_json
        from demist_bids.utils.atomic import commit_files

        prefix = Path(prefix)
        writers = {f"{prefix.name}_{PAIR_FILES['metadata']}": write_json(self.metadata)}
        for key in ("psr", "std", "mask"):
            image = getattr(self, key)
            if image is not None:
                writers[f"{prefix.name}_{PAIR_FILES[key]}"] = (
                    lambda path, img=image: nib.save(img, str(path)))
        return commit_files(prefix.parent, writers)


def check_pair_files(t1w: Path, flair: Path, max_voxels: int | None = None) -> None:
    """Refuse a pair the pipeline cannot use, naming the file, before any work.

    Raises:
        InputNotFoundError: a file does not exist.
        InvalidImageError: an image is not one 3D volume, is damaged, has an
            orientation (affine) that cannot be repaired, or the FLAIR does not
            overlap the T1w (:func:`~demist_bids.preprocessing.validation.check_pair`).
    """
    from demist_bids.preprocessing.validation import check_pair
    from demist_bids.utils.image_check import DEFAULT_MAX_VOXELS

    for path in (t1w, flair):
        if not Path(path).exists():
            raise InputNotFoundError(f"{path}: file not found")
    try:
        check_pair(t1w, flair, max_voxels=max_voxels or DEFAULT_MAX_VOXELS)
    except BadDataError as exc:
        raise InvalidImageError(str(exc)) from exc


def _as_file(image, folder: Path, name: str) -> Path:
    """A path for ``image`` (a path, or an in-memory nibabel image saved into ``folder``)."""
    if isinstance(image, (str, Path)):
        return Path(image)
    import nibabel as nib

    path = folder / f"{name}.nii.gz"
    nib.save(image, str(path))
    return path


def _collect(**outputs):
    """Nipype Function node: the synthesis workflow's outputs as one dict (identity nodes are
    dropped from the run graph, so their results cannot be read back)."""
    return outputs


def _loaded(path: str | None):
    """The image at ``path`` read into memory (its scratch folder is about to go)."""
    if not path:
        return None
    import nibabel as nib
    import numpy as np

    img = nib.load(path)
    return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def _run(wf, fields: list[str]) -> dict:
    """Run ``wf`` (a synthesis workflow) serially; return its collected outputs."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    collect = pe.Node(niu.Function(input_names=fields, output_names=["outputs"],
                                   function=_collect), name="collect")
    wf.connect([(wf.get_node("outputnode"), collect, [(f, f) for f in fields])])
    try:
        graph = wf.run(plugin="Linear")
    except BadDataError as exc:  # a check inside the graph (FLAIR coverage after registration)
        message = exc.args[0] if exc.args else str(exc)
        raise InvalidImageError(message) from exc
    node = next(n for n in graph.nodes() if n.name == "collect")
    return node.result.outputs.outputs


def synthesize_pair(
    t1w,
    flair,
    model: str | Path | None = None,
    samples: int = 1,
    device: str = "auto",
    *,
    seed: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    brain_mask=None,
    work_dir: str | Path | None = None,
    omp_nthreads: int = 1,
    max_voxels: int | None = None,
) -> PSRResult:
    """Synthesize a PSR map from one T1w and one FLAIR, as the participant level does.

    Args:
        t1w: path or nibabel image of the T1w.
        flair: path or nibabel image of the FLAIR of the same session.
        model: a demist model directory; None: the embedded demo model (phantoms only).
        samples: samples to draw; with more than one, ``std`` is their per-voxel SD.
        device: ``auto`` (CUDA when visible), ``cpu`` or ``cuda``.
        seed, sampler, steps: sampler settings (default: the configuration's,
            :class:`~demist_bids.config.SynthesisConfig` and ``SeedsConfig``).
        brain_mask: optional brain mask from another pipeline (path or image).
        work_dir: keep the Nipype work folder there (a rerun reuses it); default:
            a temporary folder, removed.
        omp_nthreads: threads per step.
        max_voxels: largest image accepted (default ``--max-image-voxels``'s).

    Returns:
        The PSR, std and brain mask on the T1w's grid, and the PSR sidecar.

    Raises:
        ValueError: (:class:`InvalidImageError`) an image is not 3D, is damaged,
            has an orientation that cannot be repaired, or the two do not
            overlap; the message names the file.
        FileNotFoundError: (:class:`InputNotFoundError`) an input is missing.
        demist_bids.exceptions.UsageError: ``model`` is not a usable model directory,
            or ``device="cuda"`` without a GPU.
        demist_bids.exceptions.MissingInputError: ``sampler="distilled"`` on a model
            without a distilled student.
    """
    import tempfile

    from demist_bids.cli.participant import resolve_model, resolve_sampler
    from demist_bids.utils.devices import resolve_device
    from demist_bids.config import SeedsConfig, SynthesisConfig
    from demist_bids.derivatives.sidecars import psr_metadata, static_metadata
    from demist_bids.models.validation import check_model
    from demist_bids.utils.model_files import card_of, directory_sha256
    from demist_bids.workflows.synthesis import init_synthesis_wf

    if int(samples) < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    defaults = SynthesisConfig()
    with tempfile.TemporaryDirectory(prefix="demist-pair-") as scratch:
        scratch = Path(scratch)
        t1w_path = _as_file(t1w, scratch, "T1w")
        flair_path = _as_file(flair, scratch, "FLAIR")
        check_pair_files(t1w_path, flair_path, max_voxels)
        mask_path = None if brain_mask is None else _as_file(brain_mask, scratch, "brain_mask")
        if mask_path is not None:
            from demist_bids.utils.image_check import check_image_files

            try:
                check_image_files([mask_path])
            except BadDataError as exc:
                raise InvalidImageError(str(exc)) from exc
        model_dir, is_demo = resolve_model(None if model is None else Path(model))
        checked = check_model(model_dir)  # each config.json read once, here
        device = resolve_device(device)
        seed = SeedsConfig().master if seed is None else seed
        sampling = resolve_sampler(model_dir, sampler or defaults.sampler,
                                   defaults.steps if steps is None else steps,
                                   configs=checked.configs)

        wf = init_synthesis_wf(
            model_dir=model_dir, samples=int(samples), seed=seed, device=device,
            omp_nthreads=omp_nthreads, name="demist_pair_wf", sampling=sampling,
        )
        wf.inputs.inputnode.t1w = str(t1w_path.absolute())
        wf.inputs.inputnode.flair = str(flair_path.absolute())
        if mask_path is not None:
            wf.inputs.inputnode.brain_mask = str(mask_path.absolute())
        wf.base_dir = str(Path(work_dir).absolute() if work_dir else scratch / "work")
        wf.config["execution"] = {
            "crashdump_dir": str(scratch / "crash"), "crashfile_format": "txt",
            "stop_on_first_crash": True, "remove_unnecessary_outputs": False,
        }
        fields = ["psr", "psr_std", "brain_mask", "qc", "synthesis_info"]
        out = _run(wf, fields)
        static = static_metadata(
            t1w=t1w_path, flair=flair_path, model_dir=model_dir,
            model_sha256=directory_sha256(model_dir), is_demo=is_demo,
            card=card_of(checked.config.card),
        )
        for i, (given, name) in enumerate(((t1w, "T1w"), (flair, "FLAIR"))):
            if not isinstance(given, (str, Path)):
                static["Sources"][i] = f"in-memory {name} image"
        metadata = psr_metadata(qc=json.loads(Path(out["qc"]).read_text()),
                                synthesis=json.loads(Path(out["synthesis_info"]).read_text()),
                                static=static)
        return PSRResult(psr=_loaded(out["psr"]), std=_loaded(out.get("psr_std")),
                         mask=_loaded(out["brain_mask"]), metadata=metadata)
