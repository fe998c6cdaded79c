"""Figures for the reports, drawn with matplotlib (Agg, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def _slices(volume: np.ndarray, mask: np.ndarray, n: int = 5) -> list[tuple[int, int]]:
    """(axis, index) of ``n`` evenly spaced slices through the mask on each axis."""
    picks = []
    for axis in (2, 1, 0):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.where(mask.any(axis=other))[0]
        if idx.size == 0:
            idx = np.arange(volume.shape[axis])
        for q in np.linspace(0.2, 0.8, n):
            picks.append((axis, int(idx[int(q * (idx.size - 1))])))
    return picks


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.rot90(np.take(volume, index, axis=axis))


def map_mosaic_svg(
    background: Path, overlay: Path, brain_mask: Path, out: Path, *,
    title: str, vmax: float | None = None, cmap: str = "magma",
) -> Path:
    """Write an SVG mosaic: the map in the brain over the grey T1w, with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nb

    bg = np.asanyarray(nb.load(background).dataobj, dtype=np.float32)
    ov = np.asanyarray(nb.load(overlay).dataobj, dtype=np.float32)
    mask = np.asanyarray(nb.load(brain_mask).dataobj) > 0
    vmax = vmax or float(np.percentile(ov[mask], 99)) if mask.any() else 1.0
    picks = _slices(bg, mask)
    n = len(picks) // 3
    fig, axes = plt.subplots(3, n, figsize=(2.0 * n, 6.4), facecolor="black")
    for ax, (axis, index) in zip(axes.ravel(), picks):
        ax.imshow(_take(bg, axis, index), cmap="gray", interpolation="nearest")
        shown = np.ma.masked_where(~_take(mask, axis, index), _take(ov, axis, index))
        im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest", alpha=0.9)
        ax.axis("off")
    fig.suptitle(title, color="white")
    cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, pad=0.01)
    cbar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", facecolor="black", bbox_inches="tight")
    plt.close(fig)
    Path(out).write_text(buf.getvalue())
    return Path(out)
