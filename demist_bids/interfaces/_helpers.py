"""Small helpers shared by demist's own interfaces (no heavy imports)."""

from __future__ import annotations

import os


def out_path(cwd: str, in_file: str, suffix: str, ext: str = ".nii") -> str:
    """``<cwd>/<input stem><suffix><ext>``: outputs named after their input, inside the node.

    Intermediate images are uncompressed: gzip costs ~2 s per 1 mm float volume
    and the derivatives sinks compress what is kept.
    """
    base = os.path.basename(in_file)
    for known in (".nii.gz", ".nii", ".tfm", ".txt"):
        if base.endswith(known):
            base = base[: -len(known)]
            break
    return os.path.join(cwd, f"{base}{suffix}{ext}")


def set_threads(n: int) -> None:
    """Cap SimpleITK's threads for this process (a Nipype node's ``n_procs``)."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(max(1, int(n)))
