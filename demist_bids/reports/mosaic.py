"""The one mosaic drawer of the reports: every brain figure of the subject page.

A 3 x ``N_CUTS`` grid (rows sagittal, coronal, axial; superior and anterior up)
of a RAS image drawn with matplotlib (Agg, no display), either with coloured
contours (the preprocessing reportlets) or with a map over the grey image in
the brain and a colour bar (PSR and uncertainty). Every figure places its cuts
with one rule, :func:`cuts`. A mosaic costs about a second; niworkflows'
nilearn-based reportlets cost 10-15 s per figure on the 2-core machine. The
registration figures are NiPreps-style flickers (niworkflows' ``compose_view``):
two images alternate under the same outline, so a misalignment shows as the
outline slipping on one of them.
"""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np

from demist_bids.preprocessing.tissues import WM

N_CUTS = 6
"""Cuts per row."""
CUT_SPAN = (0.15, 0.85)
"""Where along the extent of the mask the first and last cut lie."""
AXES = (0, 1, 2)
"""Row order: sagittal, coronal, axial (on a RAS grid)."""


def cuts(mask: np.ndarray, axis: int, n: int = N_CUTS) -> list[int]:
    """The slice rule: ``n`` indices evenly spread over the mask's extent along ``axis``
    (from 15 % to 85 % of it); the whole axis when the mask is empty."""
    other = tuple(i for i in range(mask.ndim) if i != axis)
    present = np.flatnonzero(np.asarray(mask).any(axis=other))
    if present.size == 0:
        present = np.arange(mask.shape[axis])
    lo, hi = present[0], present[-1]
    return [int(round(lo + f * (hi - lo))) for f in np.linspace(*CUT_SPAN, n)]


def _window(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Grey-scale limits: the 0.5th and 99.5th percentiles in the mask (else of positive voxels)."""
    values = data[mask] if mask.any() else data[data > 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice as a 2D array for ``origin="lower"``: superior (or anterior) up."""
    return np.asarray(np.take(volume, index, axis=axis)).T


def mosaic_svg(
    background: nib.spatialimages.SpatialImage,
    *,
    contours: list[tuple[np.ndarray, str]] = (),
    extent_mask: np.ndarray | None = None,
    overlay: np.ndarray | None = None,
    vmax: float | None = None,
    cmap: str = "magma",
    title: str = "",
    n_cuts: int = N_CUTS,
) -> str:
    """SVG text (from ``<svg``) of a 3 x ``n_cuts`` mosaic of a RAS image.

    Args:
        background: image on a RAS grid (the 1 mm model grid, or a template's).
        contours: ``(binary array, colour)`` pairs drawn as lines.
        extent_mask: where to place the cuts, and the grey window (defaults to the
            first contour, else the non-zero voxels); an overlay is shown only inside it.
        overlay: a map on the same grid, drawn with ``cmap`` from 0 to ``vmax``
            (default: its 99th percentile in ``extent_mask``) with a colour bar.
        title: written above the mosaic.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = np.asanyarray(background.dataobj, dtype=np.float32)
    where = (extent_mask if extent_mask is not None
             else contours[0][0] if contours else data > 0) > 0
    vmin, vtop = _window(data, where)
    if overlay is not None and vmax is None:
        vmax = float(np.percentile(overlay[where], 99)) if where.any() else 1.0
    top = 1 - (0.3 / 5.0 if title else 0)
    right = 1 - (1.0 / (1.6 * n_cuts + 1.0) if overlay is not None else 0)  # 1 in for the bar
    fig, axes = plt.subplots(3, n_cuts, facecolor="black",
                             figsize=(1.6 * n_cuts / right, 5.0 / top))
    image = None
    for row, axis in enumerate(AXES):
        for col, index in enumerate(cuts(where, axis, n_cuts)):
            ax = axes[row, col]
            ax.imshow(_plane(data, axis, index), cmap="gray", vmin=vmin, vmax=vtop,
                      origin="lower", interpolation="nearest")
            if overlay is not None:
                shown = np.ma.masked_where(~_plane(where, axis, index),
                                           _plane(overlay, axis, index))
                image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=vmax or 1.0, origin="lower",
                                  interpolation="nearest", alpha=0.9)
            for mask, colour in contours:
                plane = _plane(mask, axis, index).astype(np.float32)
                if plane.any() and not plane.all():
                    ax.contour(plane, levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_axis_off()
    fig.subplots_adjust(0, 0, right, top, 0.01, 0.01)
    if title:
        fig.suptitle(title, color="white", y=1 - (1 - top) / 2, va="center")
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_axes((right + 0.1 * (1 - right), 0.2,
                                                    0.18 * (1 - right), 0.6)))
        bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", facecolor="black")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.find("<svg"):]


def _write(text: str, out_file) -> str:
    Path(out_file).write_text(text)
    return str(out_file)


def mask_reportlet(t1w, brain_mask, out_file: str) -> str:
    """T1w with the brain mask's outline in red."""
    mask = np.asanyarray(brain_mask.dataobj) > 0
    return _write(mosaic_svg(t1w, contours=[(mask, "red")], extent_mask=mask), out_file)


def _flicker(first, second, contours, extent_mask, out_file: str) -> str:
    """Two mosaics under the same outlines, alternating (niworkflows' ``compose_view``)."""
    from niworkflows.viz.utils import compose_view
    from svgutils.transform import fromstring

    before = mosaic_svg(first, contours=contours, extent_mask=extent_mask)
    after = mosaic_svg(second, contours=contours, extent_mask=extent_mask)
    return compose_view([fromstring(before)], [fromstring(after)], out_file=out_file)


def registration_reportlet(t1w, flair, dseg, out_file: str, wm_label: int = WM) -> str:
    """Flicker between T1w and registered FLAIR, both under the T1w white-matter boundary."""
    labels = np.asanyarray(dseg.dataobj)
    return _flicker(t1w, flair, [(labels == wm_label, "yellow")], labels > 0, out_file)


def template_reportlet(template, subject, template_mask, out_file: str) -> str:
    """Flicker between the template and the subject's T1w resampled onto it, under the
    template brain's outline (the registration reportlet's view, in template space)."""
    brain = np.asanyarray(template_mask.dataobj) > 0
    return _flicker(template, subject, [(brain, "yellow")], brain, out_file)


def map_mosaic_svg(background: Path, overlay: Path, brain_mask: Path, out: Path, *,
                   title: str, vmax: float | None = None, cmap: str = "magma") -> Path:
    """Write an SVG mosaic: the map in the brain over the grey T1w, with a colour bar."""
    mask = np.asanyarray(nib.load(brain_mask).dataobj) > 0
    values = np.asanyarray(nib.load(overlay).dataobj, dtype=np.float32)
    _write(mosaic_svg(nib.load(background), extent_mask=mask, overlay=values, vmax=vmax,
                      cmap=cmap, title=title), out)
    return Path(out)
