"""The ``demist-phantom`` command: write a synthetic MS cohort as BIDS.

    demist-phantom OUT_DIR --subjects N --seed S [--sessions K]
                   [--control-fraction F] [--scale X] [--overwrite] [-v]

Exit codes follow the BIDS execution spec: 0 done, 64 usage error (a bad or
missing option, or a non-empty OUT_DIR without ``--overwrite``), 73 OUT_DIR
cannot be created.
Only typer is imported at start-up; numpy, scipy and nibabel load when a
cohort is generated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

USAGE_EXIT_CODE = 64
CLICK_USAGE_EXIT_CODE = 2
app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def generate(
    out_dir: Path = typer.Argument(..., help="Folder for the new BIDS dataset (must be empty)."),
    subjects: int = typer.Option(..., "--subjects", "-n", min=1, help="Number of subjects."),
    seed: int = typer.Option(
        ..., "--seed", help="Random seed; the same seed gives the same bytes."
    ),
    sessions: int = typer.Option(1, "--sessions", min=1, help="Sessions per subject."),
    control_fraction: float = typer.Option(
        0.3,
        "--control-fraction",
        min=0.0,
        max=1.0,
        help="Fraction of healthy controls (no lesions).",
    ),
    scale: float = typer.Option(
        1.0,
        "--scale",
        min=0.2,
        max=1.5,
        help="Head size relative to MNI152, at 1 mm voxels (0.5: about 92x110x92 voxels).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT_DIR."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output."),
) -> None:
    """Write a synthetic MS cohort (T1w, FLAIR, PSR maps, lesion masks, truth) as BIDS."""
    from demist_bids.exceptions import DemistError

    from .cohort import generate_cohort

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    try:
        scans = generate_cohort(
            out_dir,
            subjects=subjects,
            seed=seed,
            sessions=sessions,
            control_fraction=control_fraction,
            scale=scale,
            overwrite=overwrite,
        )
    except DemistError as error:
        typer.echo(f"demist-phantom: {error}", err=True)
        raise typer.Exit(error.exit_code) from error
    patients = len({scan.subject for scan in scans if scan.group == "MS"})
    where = Path(out_dir).absolute()
    typer.echo(f"wrote {len(scans)} scans of {subjects} subjects ({patients} MS) to {where}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; command-line mistakes exit 64 (BIDS usage error)."""
    try:
        app(args=argv, prog_name="demist-phantom")
    except SystemExit as done:
        # Click reports a bad or missing option with exit status 2 after printing it.
        if done.code == CLICK_USAGE_EXIT_CODE:
            raise SystemExit(USAGE_EXIT_CODE) from None
        raise
