"""JSON sidecars of demist's outputs (REFERENCE §3).

Every image says where it came from (``Sources`` as ``bids:raw:`` URIs), which
grid it lies on, how it was estimated, with which model file (checksum and model
card summary), sampler settings, seed, device, software version and runtime,
plus the preprocessing QC measures the group report reads.
"""

from __future__ import annotations

from pathlib import Path

from demist_bids import __version__
from demist_bids.derivatives.writer import OutputItem

ESTIMATION_REFERENCE = (
    "DEMIST: decoupled multi-stream latent diffusion for quantitative myelin map synthesis "
    "(pool-size ratio from T1w and FLAIR)"
)
PSR_DESCRIPTION = (
    "Synthesized quantitative magnetization transfer pool-size ratio (PSR = macromolecular / "
    "free water pool size) from T1w and FLAIR by latent diffusion."
)


def static_metadata(
    *, bids_dir: Path, t1w: Path, flair: Path, model_dir: Path, model_sha256: str,
    is_demo: bool, card: dict
) -> dict:
    """Fields known when the workflow is built (same for every output of a subject)."""
    def uri(path: Path) -> str:
        return "bids:raw:" + Path(path).relative_to(bids_dir).as_posix()

    return {
        "Sources": [uri(t1w), uri(flair)],
        "SoftwareVersion": f"demist {__version__}",
        "Model": {
            "Name": card.get("name", Path(model_dir).name),
            "Path": str(model_dir),
            "SHA256": model_sha256,
            "IsDemo": is_demo,
            "Card": card.get("summary", card.get("intended_use", "")),
        },
    }


def build_items(
    *, psr: Path, psr_std: Path | None, psr_model: Path | None, brain_mask: Path,
    dseg: Path | None, qc: dict, synthesis: dict, static: dict, lesion_values: dict | None = None
) -> list[OutputItem]:
    """The images of one subject with their complete sidecars."""
    native = {"SpatialReference": static["Sources"][0]}
    sampler = {
        "Name": synthesis.get("sampler"),
        "Steps": synthesis.get("steps"),
        "Samples": synthesis.get("samples"),
        "Seed": synthesis.get("seed"),
        "Device": synthesis.get("device"),
        "Start": synthesis.get("start"),
        "Precision": synthesis.get("dtype"),
        "Mode": synthesis.get("mode", synthesis.get("window")),
    }
    psr_meta = {
        "Description": PSR_DESCRIPTION,
        **native,
        "SkullStripped": True,
        "Units": "1",
        "EstimationAlgorithm": "DEMIST latent diffusion (demist implementation)",
        "EstimationReference": ESTIMATION_REFERENCE,
        **static,
        "Sampler": sampler,
        "RuntimeSeconds": synthesis.get("seconds"),
        "QC": qc,
    }
    if lesion_values:
        psr_meta["LesionValues"] = lesion_values
    if static.get("Model", {}).get("IsDemo"):
        psr_meta["Warning"] = (
            "Made with the embedded DEMO model, trained on synthetic phantoms: "
            "not for research or clinical use."
        )
    items = [OutputItem(psr, "PSRmap", desc="synth", metadata=psr_meta)]
    if psr_std is not None:
        std_meta = dict(psr_meta, Description="Per-voxel standard deviation of the synthesized PSR "
                        "across samples (sampling uncertainty).")
        items.append(OutputItem(psr_std, "PSRmap", desc="std", metadata=std_meta))
    if psr_model is not None:
        model_meta = dict(psr_meta, SpatialReference=native["SpatialReference"],
                          Resolution="1 mm isotropic RAS grid aligned to the T1w (the model's grid)")
        items.append(OutputItem(psr_model, "PSRmap", desc="synth", res="1mm", metadata=model_meta))
    provenance = {"SoftwareVersion": static.get("SoftwareVersion"), "Model": static.get("Model")}
    if "Warning" in psr_meta:
        provenance["Warning"] = psr_meta["Warning"]
    mask_meta = {"Type": "Brain", **native, "SkullStripped": False,
                 "Sources": static["Sources"][:1],
                 "Template": qc.get("template"), **provenance}
    items.append(OutputItem(brain_mask, "mask", desc="brain", metadata=mask_meta))
    if dseg is not None:
        items.append(OutputItem(dseg, "dseg", metadata={
            **native, "SkullStripped": False, "Sources": static["Sources"][:1],
            "Labels": {"1": "CSF", "2": "GM", "3": "WM"}, **provenance,
        }))
    return items
