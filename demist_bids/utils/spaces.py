"""``--output-spaces`` in NiPreps' syntax, parsed in one place.

A space is ``T1w`` (the native grid, always written), ``model`` (the 1 mm RAS
grid the model ran on) or a TemplateFlow template with an optional resolution,
``MNI152NLin2009cAsym:res-2`` (``res-1`` when none is named), as in
niworkflows' ``SpatialReferences``. Template names and resolutions are checked
against TemplateFlow's own catalogue (its skeleton ships with the package and
needs no network); whether the template's *files* are there is a separate
question (:func:`demist_bids.preprocessing.templates.space_template_files`),
answered before any work.

Standard library only at import: the parser calls into TemplateFlow only when a
template is named.
"""

from __future__ import annotations

from dataclasses import dataclass

from demist_bids.exceptions import UsageError

NONSTANDARD = ("T1w", "model")
"""Spaces that are not templates: the native T1w grid and the model's 1 mm grid."""
DEFAULT_RESOLUTION = "1"


@dataclass(frozen=True, order=True)
class OutputSpace:
    """One output space: ``name`` (``T1w``, ``model`` or a template) and a template's ``res``."""

    name: str
    res: str | None = None
    """Resolution label of a template grid (TemplateFlow's ``res-``, zero padding dropped)."""

    @property
    def is_template(self) -> bool:
        return self.name not in NONSTANDARD

    def __str__(self) -> str:
        return f"{self.name}:res-{self.res}" if self.is_template else self.name


def _split(value: str) -> tuple[str, dict[str, str]]:
    name, *specs = value.strip().split(":")
    entities = {}
    for spec in specs:
        key, sep, label = spec.partition("-")
        if not sep or not key or not label:
            raise UsageError(f"--output-spaces {value}: {spec!r} is not an entity-label pair "
                             "such as res-2")
        entities[key] = label
    return name, entities


def template_resolutions(name: str) -> dict[str, str]:
    """Resolution labels TemplateFlow declares for ``name`` (``"2"`` -> its own ``"02"``).

    Raises:
        UsageError: TemplateFlow does not know a template of that name (exit 64).
    """
    from templateflow import api

    if name not in api.templates():
        raise UsageError(f"--output-spaces: unknown template {name!r} (not a TemplateFlow "
                         "template, nor T1w or model)")
    declared = api.get_metadata(name).get("res") or {}
    return {str(int(label)) if label.isdigit() else label: label for label in declared}


def parse_output_spaces(values: list[str]) -> list[OutputSpace]:
    """Parse ``--output-spaces`` values; duplicates dropped, order kept.

    Raises:
        UsageError: an unknown space or template, an unknown or malformed
            resolution, or another entity than ``res`` (exit 64, naming it).
    """
    spaces: list[OutputSpace] = []
    for value in values:
        name, entities = _split(value)
        extra = sorted(set(entities) - {"res"})
        if extra:
            raise UsageError(f"--output-spaces {value}: only res- can be given, not {extra[0]}-")
        if name in NONSTANDARD:
            if entities:
                raise UsageError(f"--output-spaces {value}: {name} takes no resolution")
            space = OutputSpace(name)
        else:
            declared = template_resolutions(name)
            res = entities.get("res", DEFAULT_RESOLUTION)
            res = str(int(res)) if res.isdigit() else res
            if res not in declared:
                raise UsageError(
                    f"--output-spaces {value}: unknown resolution res-{res} of {name} "
                    f"(TemplateFlow has {', '.join('res-' + r for r in declared) or 'none'})")
            space = OutputSpace(name, res)
        if space not in spaces:
            spaces.append(space)
    return spaces


def template_spaces(values: list[str]) -> list[OutputSpace]:
    """The template spaces among normalized ``--output-spaces`` values (no TemplateFlow query)."""
    spaces = []
    for value in values:
        name, entities = _split(value)
        if name not in NONSTANDARD:
            spaces.append(OutputSpace(name, entities.get("res", DEFAULT_RESOLUTION)))
    return spaces
