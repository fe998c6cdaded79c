"""JSON sidecars of demist's outputs (REFERENCE §3).

Every image says where it came from (``Sources`` as ``bids:raw:`` URIs, or
plain paths outside a BIDS dataset), which grid it lies on, how it was
estimated, with which model file (checksum and model card summary), sampler
settings, seed, device, software version and runtime, plus the preprocessing QC
measures the group report reads. The fixed fields of each output are declared
in :mod:`.outputs`; the PSR maps also carry the inputs' acquisition metadata,
as the BIDS qMRI appendix asks of maps estimated from other images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from demist_bids import __version__
from demist_bids.derivatives.outputs import OUTPUTS, declared
from demist_bids.derivatives.writer import OutputItem

LOGGER = logging.getLogger("demist.derivatives")

SCANNER_FIELDS = (
    "MagneticFieldStrength", "Manufacturer", "ManufacturersModelName", "DeviceSerialNumber",
    "StationName", "SoftwareVersions", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReceiveCoilName", "ReceiveCoilActiveElements",
    "GradientSetType", "MRTransmitCoilSequence", "CoilCombinationMethod",
)
"""Fields the qMRI appendix asks a map to repeat when they are the same for all its inputs."""
SEQUENCE_FIELDS = (
    "PulseSequenceType", "ScanningSequence", "SequenceVariant", "MRAcquisitionType",
    "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "SliceThickness",
)
"""Per-contrast parameters, kept per input under ``InputAcquisition``."""


def read_sidecar(image: Path) -> dict:
    """The JSON beside an image (``x.nii.gz`` -> ``x.json``), for inputs outside a BIDS dataset."""
    path = Path(image).with_name(Path(image).name.split(".nii")[0] + ".json")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def acquisition_metadata(t1w: dict, flair: dict) -> dict:
    """Scanner fields shared by the T1w and FLAIR sidecars, and each one's sequence parameters.

    A scanner field is copied when one input gives it or both give the same
    value; conflicting values are left out (and logged), since one number would
    misdescribe one of the inputs.
    """
    meta: dict = {}
    for name in SCANNER_FIELDS:
        values = [m[name] for m in (t1w, flair) if name in m]
        if values and all(v == values[0] for v in values):
            meta[name] = values[0]
        elif values:
            LOGGER.info("%s differs between the T1w and the FLAIR: not copied", name)
    per_input = {contrast: {k: m[k] for k in SEQUENCE_FIELDS if k in m}
                 for contrast, m in (("T1w", t1w), ("FLAIR", flair))}
    if any(per_input.values()):
        meta["InputAcquisition"] = {k: v for k, v in per_input.items() if v}
    return meta


def static_metadata(
    *, t1w: Path, flair: Path, model_dir: Path, model_sha256: str, is_demo: bool, card: dict,
    bids_dir: Path | None = None, t1w_metadata: dict | None = None,
    flair_metadata: dict | None = None,
) -> dict:
    """Fields known when the workflow is built (same for every output of a subject).

    Sources are ``bids:raw:`` URIs within ``bids_dir``, else absolute paths; the
    inputs' metadata default to the JSON files beside them.
    """
    def source(path: Path) -> str:
        if bids_dir is None:
            return str(Path(path).absolute())
        return "bids:raw:" + Path(path).relative_to(bids_dir).as_posix()

    acquisition = acquisition_metadata(
        read_sidecar(t1w) if t1w_metadata is None else t1w_metadata,
        read_sidecar(flair) if flair_metadata is None else flair_metadata,
    )
    return {
        "Sources": [source(t1w), source(flair)],
        "SoftwareVersion": f"demist {__version__}",
        "Model": {
            "Name": card.get("name", Path(model_dir).name),
            "Path": str(model_dir),
            "SHA256": model_sha256,
            "IsDemo": is_demo,
            "Card": card.get("summary", card.get("intended_use", "")),
        },
        "Acquisition": acquisition,
    }


DEMO_WARNING = ("Made with the embedded DEMO model, trained on synthetic phantoms: "
                "not for research or clinical use.")


def psr_metadata(*, qc: dict, synthesis: dict, static: dict,
                 lesion_values: dict | None = None) -> dict:
    """The synthesized PSR map's sidecar (the other outputs derive theirs from it)."""
    static = dict(static)
    acquisition = static.pop("Acquisition", {})
    sampler = {
        "Name": synthesis.get("sampler"),
        "Steps": synthesis.get("steps"),
        "Samples": synthesis.get("samples"),
        "Seed": synthesis.get("seed"),
        "Device": synthesis.get("device"),
        "Start": synthesis.get("start"),
        "Guidance": synthesis.get("guidance"),
        "GuidanceUnconditionalBranch": synthesis.get("unconditional"),
        "GuidanceInterval": synthesis.get("guidance_interval"),
        "Precision": synthesis.get("dtype"),
        "Mode": synthesis.get("mode", synthesis.get("window")),
    }
    meta = {
        **OUTPUTS["psr"].sidecar,
        "SpatialReference": static["Sources"][0],
        **acquisition,
        **static,
        "Sampler": sampler,
        "RuntimeSeconds": synthesis.get("seconds"),
        "QC": qc,
    }
    if lesion_values:
        meta["LesionValues"] = lesion_values
    if static.get("Model", {}).get("IsDemo"):
        meta["Warning"] = DEMO_WARNING
    return meta


def space_metadata(key: str, *, psr_meta: dict, provenance: dict, t1w_source: list,
                   registration: dict) -> dict:
    """Sidecar of a template-space output (``key`` from :func:`~.outputs.in_space`).

    ``registration`` is what the template registration recorded
    (``Template``, ``TemplateSource``, ``Resolutions`` and its costs).
    """
    out = declared(key)
    reg = {k: v for k, v in registration.items() if k != "Resolutions"}
    res = out.entities.get("res")
    grids = registration.get("Resolutions", {})
    where = {"Resolution": grids.get(res, f"res-{res}")} if res else {}
    if out.entities["suffix"] == "xfm":
        return {**out.sidecar, "Sources": t1w_source, **reg,
                "SoftwareVersion": provenance.get("SoftwareVersion")}
    if out.entities["suffix"] == "PSRmap":
        base = {k: v for k, v in psr_meta.items() if k != "SpatialReference"}
        return {**base, **out.sidecar, **where, "TemplateRegistration": reg}
    return {**out.sidecar, **where, "Sources": t1w_source, "TemplateRegistration": reg,
            **provenance}


def build_items(
    files: dict[str, Path | None], *, qc: dict, synthesis: dict, static: dict,
    lesion_values: dict | None = None, spaces: dict[str, Path] | None = None,
    registrations: dict[str, dict] | None = None,
) -> list[OutputItem]:
    """The outputs of one subject (``files``: :data:`~.outputs.OUTPUTS` key -> file, None when
    absent) with their complete sidecars; ``spaces``: template-space outputs by their
    :func:`~.outputs.in_space` key, ``registrations``: each template's registration record."""
    psr_meta = psr_metadata(qc=qc, synthesis=synthesis, static=static,
                            lesion_values=lesion_values)
    t1w_source = static["Sources"][:1]
    provenance = {"SoftwareVersion": static.get("SoftwareVersion"), "Model": static.get("Model")}
    if "Warning" in psr_meta:
        provenance["Warning"] = psr_meta["Warning"]
    native = {"SpatialReference": psr_meta["SpatialReference"]}
    preprocessing = {**native, "SoftwareVersion": static.get("SoftwareVersion"), "QC": qc}
    metadata = {
        "psr": psr_meta,
        "psr_std": {**psr_meta, **OUTPUTS["psr_std"].sidecar},
        "psr_model": {**psr_meta, **OUTPUTS["psr_model"].sidecar},
        "brain_mask": {**OUTPUTS["brain_mask"].sidecar, **native, "Sources": t1w_source,
                       "Template": qc.get("template"), **provenance},
        "dseg": {**OUTPUTS["dseg"].sidecar, **native, "Sources": t1w_source, **provenance},
        "t1w_preproc": {**OUTPUTS["t1w_preproc"].sidecar, **preprocessing,
                        "Sources": t1w_source},
        "flair_preproc": {**OUTPUTS["flair_preproc"].sidecar, **preprocessing,
                          "Sources": static["Sources"][::-1]},
        "flair_to_t1w_xfm": {**OUTPUTS["flair_to_t1w_xfm"].sidecar,
                             "Sources": static["Sources"][::-1],
                             "SoftwareVersion": static.get("SoftwareVersion"),
                             "RegistrationCost": qc.get("registration_cost")},
    }
    items = [OutputItem(key, Path(files[key]), metadata[key])
             for key in OUTPUTS if files.get(key) is not None]
    for key, path in (spaces or {}).items():
        template = declared(key).entities.get("space") or next(
            v for k, v in declared(key).entities.items() if k in ("from", "to") and v != "T1w")
        meta = space_metadata(key, psr_meta=psr_meta, provenance=provenance,
                              t1w_source=t1w_source,
                              registration=(registrations or {}).get(template, {}))
        items.append(OutputItem(key, Path(path), meta))
    return items
