"""Small SVG reportlets for the anatomical preprocessing, drawn with matplotlib.

A 3 x N mosaic (sagittal, coronal, axial) with contours costs about a second;
niworkflows' nilearn-based reportlets cost 10-15 s per figure on the 2-core
machine. The registration figure is a NiPreps-style flicker (niworkflows'
``compose_view``): T1w and FLAIR alternate under the same white-matter
boundary, so any misalignment shows as the boundary slipping on one of them.
"""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np

from .tissues import WM

N_CUTS = 6


def _cuts(mask: np.ndarray, axis: int, n: int) -> list[int]:
    """Slice indices spread over the mask's extent along ``axis`` (10-90 %)."""
    other = tuple(i for i in range(3) if i != axis)
    present = np.flatnonzero(mask.any(axis=other))
    if present.size == 0:
        present = np.arange(mask.shape[axis])
    lo, hi = present[0], present[-1]
    return [int(round(lo + f * (hi - lo))) for f in np.linspace(0.15, 0.85, n)]


def _window(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    values = data[mask] if mask.any() else data[data > 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def mosaic_svg(
    background: nib.spatialimages.SpatialImage,
    *,
    contours: list[tuple[np.ndarray, str]] = (),
    extent_mask: np.ndarray | None = None,
    n_cuts: int = N_CUTS,
) -> str:
    """SVG text of a 3 x ``n_cuts`` mosaic of a RAS image with coloured contours.

    Args:
        background: image on a RAS grid (the 1 mm model grid).
        contours: ``(binary array, colour)`` pairs drawn as lines.
        extent_mask: where to place the cuts (defaults to the first contour, else non-zero voxels).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = np.asanyarray(background.dataobj, dtype=np.float32)
    where = extent_mask if extent_mask is not None else (
        contours[0][0] if contours else data > 0)
    vmin, vmax = _window(data, where > 0)
    fig, axes = plt.subplots(3, n_cuts, figsize=(1.6 * n_cuts, 5.0), facecolor="black")
    for row, axis in enumerate((0, 1, 2)):
        for col, index in enumerate(_cuts(where > 0, axis, n_cuts)):
            ax = axes[row, col]
            plane_of = (slice(None),) * axis + (index,)
            take = lambda a: np.asarray(a[plane_of]).T  # noqa: E731 - a 2D view, superior up
            ax.imshow(take(data), cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                      interpolation="nearest")
            for mask, colour in contours:
                plane = take(mask).astype(np.float32)
                if plane.any() and not plane.all():
                    ax.contour(plane, levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_axis_off()
    fig.subplots_adjust(0, 0, 1, 1, 0.01, 0.01)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", facecolor="black")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.find("<svg"):]


def mask_reportlet(t1w, brain_mask, out_file: str) -> str:
    """T1w with the brain mask's outline in red."""
    mask = np.asanyarray(brain_mask.dataobj) > 0
    svg = mosaic_svg(t1w, contours=[(mask, "red")], extent_mask=mask)
    with open(out_file, "w") as stream:
        stream.write(svg)
    return out_file


def registration_reportlet(t1w, flair, dseg, out_file: str, wm_label: int = WM) -> str:
    """Flicker between T1w and registered FLAIR, both under the T1w white-matter boundary."""
    from niworkflows.viz.utils import compose_view
    from svgutils.transform import fromstring

    wm = np.asanyarray(dseg.dataobj) == wm_label
    brain = np.asanyarray(dseg.dataobj) > 0
    contours = [(wm, "yellow")]
    before = mosaic_svg(t1w, contours=contours, extent_mask=brain)
    after = mosaic_svg(flair, contours=contours, extent_mask=brain)
    return compose_view([fromstring(before)], [fromstring(after)], out_file=out_file)



def template_reportlet(template, subject, template_mask, out_file: str) -> str:
    """Flicker between the template and the subject's T1w resampled onto it, under the
    template brain's outline (the registration reportlet's view, in template space)."""
    from niworkflows.viz.utils import compose_view
    from svgutils.transform import fromstring

    brain = np.asanyarray(template_mask.dataobj) > 0
    contours = [(brain, "yellow")]
    before = mosaic_svg(template, contours=contours, extent_mask=brain)
    after = mosaic_svg(subject, contours=contours, extent_mask=brain)
    return compose_view([fromstring(before)], [fromstring(after)], out_file=out_file)
