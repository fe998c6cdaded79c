"""Chart primitives: ticks and ranges on awkward inputs."""

from __future__ import annotations

import pytest

from demist_bids.reports.charts import Mark, nice_ticks, scatter_plot, strip_plot


def test_nice_ticks_round_values():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0.13, 0.21) == pytest.approx([0.14, 0.16, 0.18, 0.2])
    assert nice_ticks(1.0, 1.0) == [1.0]


def test_nice_ticks_terminate_on_float_noise():
    ticks = nice_ticks(0.9999999999999997, 1.0)
    assert 0 < len(ticks) <= 20


def test_charts_with_identical_values_and_links():
    marks = [Mark(x=1.0, y=0.2, label=f"sub-0{i}: 0.2", href=f"sub-0{i}.html") for i in range(3)]
    svg = strip_plot({"all": marks}, title="same <values>", y_label="PSR")
    assert svg.count('<circle class="dot"') == 3 and 'href="sub-01.html"' in svg
    assert "same &lt;values&gt;" in svg
    assert (
        scatter_plot(marks, title="t", x_label="x", y_label="y", identity=True).count("<title>")
        == 3
    )
