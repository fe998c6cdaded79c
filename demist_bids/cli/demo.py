"""``demist-demo OUT``: a synthetic cohort, the participant level and the group level, end to end.

Needs no user data and no downloads: the cohort comes from ``demist-phantom``
(anatomy from the MNI152 maps nilearn ships) and the model is the embedded demo
model. It is the README's main-job command and finishes in a few minutes on two
CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def demo(
    out_dir: Path = typer.Argument(..., help="where to put the cohort, outputs and work directory"),
    subjects: int = typer.Option(3, min=1, help="phantom subjects"),
    seed: int = typer.Option(2024, help="seed of the phantom cohort (the demo model used 0)"),
    scale: float = typer.Option(0.6, min=0.3, max=1.0, help="brain size (1.0: adult MNI152)"),
    nprocs: int = typer.Option(2, min=1, help="parallel processes"),
    samples: int = typer.Option(2, min=1, help="samples per subject (>1 adds std maps: the spread of the samples)"),
) -> None:
    """Make a phantom cohort in OUT/bids, run participant and group into OUT/derivatives/demist."""
    from rich.console import Console

    from demist_bids.cli.run import run
    from demist_bids.phantom import generate_cohort

    console = Console(stderr=True)
    out_dir = out_dir.absolute()
    bids, deriv, work = out_dir / "bids", out_dir / "derivatives" / "demist", out_dir / "work"
    started = time.monotonic()
    if not (bids / "dataset_description.json").exists():
        console.rule(f"[1/3] synthetic MS cohort: {subjects} subjects -> {bids}")
        generate_cohort(bids, subjects=subjects, seed=seed, scale=scale)
    else:
        console.rule(f"[1/3] reusing the cohort in {bids}")
    console.rule("[2/3] participant level (preprocessing + synthesis, demo model)")
    common = ["-w", str(work), "--nprocs", str(nprocs), "--omp-nthreads", "1"]
    code = run([str(bids), str(deriv), "participant", "--samples", str(samples), *common])
    if code not in (0,):
        console.print(f"[red]participant level exited with {code}[/red]")
        raise typer.Exit(code)
    console.rule("[3/3] group level")
    code = run([str(bids), str(deriv), "group", "--psr-derivatives",
                str(bids / "derivatives" / "qmt"), *common])
    elapsed = time.monotonic() - started
    console.rule(f"done in {elapsed:.0f} s")
    console.print(f"reports: {deriv}/sub-*.html and {deriv}/group_PSR.html")
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
