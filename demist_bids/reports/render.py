"""Jinja2 rendering of demist's pages: the templates and the one stylesheet in ``templates/``.

Every page (``sub-X.html``, ``group_PSR.html``, ``evaluation.html``) extends
``base.html``, which inlines ``style.css``: each page carries the same
stylesheet and stays self-contained (no external stylesheet, script, font or
image), so it opens offline and can be mailed. Autoescaping is on; figures
(SVG drawn by :mod:`~demist_bids.reports.mosaic` and
:mod:`~demist_bids.reports.charts`) enter as :class:`markupsafe.Markup`.
"""

from __future__ import annotations

import html
import math
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
from markupsafe import Markup

TEMPLATES = "templates"


def fmt(value: Any) -> str:
    """A value as the pages print it: 4 significant digits, ``n/a`` for none, yes/no, lists
    joined with ``; `` (``none`` when empty)."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(fmt(v) for v in value) or "none"
    return str(value)


def stylesheet() -> str:
    """The shared stylesheet's text (``templates/style.css``)."""
    return _resource("style.css")


@lru_cache(maxsize=None)
def _resource(name: str) -> str:
    return resources.files(__package__).joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def _escape(value: Any) -> Markup:
    """Every printed value escaped as :func:`html.escape` does (``&#x27;``, ``&quot;``), as the
    pages always were; Markup (figures, macros) passes as it is."""
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment over ``templates/`` (autoescaped, blocks trimmed)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader(__package__, TEMPLATES), autoescape=True,
                      finalize=_escape, trim_blocks=True, lstrip_blocks=True,
                      undefined=StrictUndefined)
    env.filters["fmt"] = fmt
    env.globals["stylesheet"] = Markup(stylesheet())
    env.globals["sortable_js"] = Markup(_resource("sortable.js"))
    return env


def render(template: str, **context: Any) -> str:
    """``template`` rendered with ``context``; the text ends with a newline."""
    return environment().get_template(template).render(**context).rstrip("\n") + "\n"


def svg(text: str) -> Markup:
    """Trusted SVG (our own figures) for a template, from its ``<svg`` on."""
    start = text.find("<svg")
    return Markup(text[start:] if start >= 0 else text)
