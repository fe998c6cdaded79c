"""init_anat_preproc_wf: the graph, a full run on a small synthetic head, and cache reuse."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.preprocessing.synthetic import head_pair  # noqa: F401

CONTRACT_OUTPUTS = {
    "t1w_preproc", "flair_preproc", "brain_mask", "dseg", "t1w_native", "brain_mask_native",
    "dseg_native", "t1w_biascorr", "flair_biascorr", "flair_to_t1w_xfm", "qc", "t1w_flair_svg",
    "mask_svg",
}
BIB = Path(__file__).resolve().parents[2] / "boilerplate" / "boilerplate.bib"


def _build(**kwargs):
    from demist_bids.workflows.anatomical import init_anat_preproc_wf

    return init_anat_preproc_wf(**kwargs)


def test_graph_and_contract():
    wf = _build()
    inputnode = wf.get_node("inputnode")
    outputnode = wf.get_node("outputnode")
    assert set(inputnode.inputs.copyable_trait_names()) == {"t1w", "flair", "brain_mask"}
    assert set(outputnode.inputs.copyable_trait_names()) == CONTRACT_OUTPUTS
    names = {node.fullname for node in wf._get_all_nodes()}
    for step in ("validate_t1w", "n4_t1w", "flair_to_t1w", "brain_mask", "tissues", "scale_flair"):
        assert any(name.endswith(step) for name in names), step
    # every cited key is defined in the bibliography
    text = wf.visit_desc()
    cited = set(re.findall(r"\[@([\w\-]+)\]", text))
    defined = set(re.findall(r"@\w+\{([^,]+),", BIB.read_text()))
    assert cited and cited <= defined, cited - defined
    assert "N4" in text and "mutual information" in text


def _run(wf, plugin="Linear", **plugin_args):
    """Run ``wf`` and return its outputnode's values (identity nodes vanish from the run graph)."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    fields = sorted(CONTRACT_OUTPUTS)
    collect = pe.Node(niu.Merge(len(fields)), name="collect")
    wf.connect([(wf.get_node("outputnode"), collect,
                 [(f, f"in{i + 1}") for i, f in enumerate(fields)])])
    graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    values = next(n for n in graph.nodes() if n.name == "collect").result.outputs.out
    return type("Outputs", (), dict(zip(fields, values)))


def _result(wf_dir: Path, node: str) -> Path:
    return next(wf_dir.rglob(f"{node}/result_{node}.pklz"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_on_a_synthetic_head_then_rerun_from_cache(head_pair, tmp_path):  # noqa: F811
    wf = _build(voxel_mm=2.0)
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.t1w = str(head_pair.t1w)
    wf.inputs.inputnode.flair = str(head_pair.flair)
    out = _run(wf)

    t1w = nib.load(out.t1w_preproc)
    flair = nib.load(out.flair_preproc)
    mask = nib.load(out.brain_mask)
    dseg = nib.load(out.dseg)
    for img in (flair, mask, dseg):
        assert img.shape == t1w.shape and np.allclose(img.affine, t1w.affine)
    assert np.allclose(t1w.affine[:3, :3], 2.0 * np.eye(3))  # RAS, world-aligned
    assert t1w.get_data_dtype() == np.float32 and flair.get_data_dtype() == np.float32
    assert mask.get_data_dtype() == np.uint8 and dseg.get_data_dtype() == np.uint8
    for img in (t1w, flair):
        data = img.get_fdata()
        assert data.min() == 0.0 and data.max() == 1.0
    assert set(np.unique(np.asanyarray(dseg.dataobj))) == {0, 1, 2, 3}

    native = nib.load(out.t1w_native)
    truth = nib.load(head_pair.brain_mask)
    mask_native = nib.load(out.brain_mask_native)
    assert mask_native.shape == native.shape == truth.shape
    a, b = np.asanyarray(mask_native.dataobj) > 0, np.asanyarray(truth.dataobj) > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9
    assert nib.load(out.dseg_native).shape == native.shape

    qc = json.loads(Path(out.qc).read_text())
    assert qc["template"].startswith("MNI152") and qc["skull_stripped_input"] is False
    assert qc["flair_coverage"] > 0.95 and qc["registration_cost"] < 0
    for svg in (out.t1w_flair_svg, out.mask_svg):
        assert Path(svg).read_text().lstrip().startswith("<svg")

    import SimpleITK as sitk

    xfm = sitk.ReadTransform(out.flair_to_t1w_xfm)
    ijk = np.argwhere(b)[::11]
    ras = (truth.affine[:3, :3] @ ijk.T).T + truth.affine[:3, 3]
    found = np.array([xfm.TransformPoint(tuple(map(float, p * [-1, -1, 1]))) for p in ras])
    expected = (head_pair.flair_to_t1w[:3, :3] @ ras.T).T + head_pair.flair_to_t1w[:3, 3]
    assert np.linalg.norm(found * [-1, -1, 1] - expected, axis=1).max() < 1.0

    # Second run, other plugin, same work dir: nothing is recomputed.
    wf_dir = tmp_path / "work" / "anat_preproc_wf"
    stamps = {n: os.stat(_result(wf_dir, n)).st_mtime_ns
              for n in ("n4_t1w", "flair_to_t1w", "brain_mask", "tissues", "qc")}
    again = _build(voxel_mm=2.0)
    again.base_dir = str(tmp_path / "work")
    again.inputs.inputnode.t1w = str(head_pair.t1w)
    again.inputs.inputnode.flair = str(head_pair.flair)
    again_out = _run(again, "MultiProc", n_procs=2)
    assert again_out.qc == out.qc
    assert {n: os.stat(_result(wf_dir, n)).st_mtime_ns for n in stamps} == stamps


def test_given_mask_reaches_the_mask_node():
    wf = _build()
    edges = wf._graph.edges(data=True)
    linked = [d for u, v, d in edges if u.name == "inputnode" and v.name == "brain_mask_wf"]
    assert any(("brain_mask", "inputnode.in_mask") in d["connect"] for d in linked)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_raw_clinical_session(shared_data, tmp_path):
    anat = shared_data / "openms_subset/sub-long01/ses-1/anat"
    wf = _build(omp_nthreads=2)
    wf.base_dir = str(tmp_path)
    wf.inputs.inputnode.t1w = str(anat / "sub-long01_ses-1_T1w.nii.gz")
    wf.inputs.inputnode.flair = str(anat / "sub-long01_ses-1_FLAIR.nii.gz")
    out = _run(wf, "MultiProc", n_procs=2)
    qc = json.loads(Path(out.qc).read_text())
    assert 1000 < qc["brain_mask_volume_ml"] < 1600
    assert qc["skull_stripped_input"] is False and qc["flair_coverage"] > 0.9
    assert "T1w: reoriented LPS to RAS" in qc["fixes"]
    assert np.allclose(nib.load(out.t1w_preproc).header.get_zooms(), 1.0)
