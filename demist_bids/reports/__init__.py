"""Every page and figure demist draws (NiPreps style), and nothing outside draws one.

- ``subject.py``: ``sub-X.html`` from the reportlets, the run record (``about.py``)
  and the crash files; ``group.py``: ``group_PSR.html`` from the group level's data;
  ``evaluation.py``: ``evaluation.html`` and its tables.
- ``templates/``: the Jinja2 templates of those pages and the one stylesheet inlined
  into each (``render.py``).
- ``mosaic.py``: the one mosaic drawer (every brain figure, one slice rule);
  ``charts.py``: the group page's SVG charts and the evaluation's ROC curves;
  ``lesions.py``: PSR in lesions against NAWM.
"""
