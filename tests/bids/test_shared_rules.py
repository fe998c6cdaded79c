"""The naming and filter-file rules every level shares (demist_bids.bids, standard library only)."""

from __future__ import annotations

import pytest

from demist_bids.bids import read_bids_filters, scan_prefix
from demist_bids.exceptions import UsageError


def test_scan_prefix():
    assert scan_prefix("01") == "sub-01"
    assert scan_prefix("01", "A") == "sub-01_ses-A"
    assert scan_prefix("01", "") == "sub-01"


@pytest.mark.parametrize("text, message", [
    ("{not json", "cannot read it as JSON"),
    ('{"dwi": {}}', "expected an object with keys 't1w' and/or 'flair'"),
    ("[1, 2]", "expected an object"),
])
def test_bad_filter_files_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "filter.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_bids_filters(path)


def test_good_filter_file(tmp_path):
    path = tmp_path / "filter.json"
    path.write_text('{"t1w": {"acquisition": "mprage"}}')
    assert read_bids_filters(path) == {"t1w": {"acquisition": "mprage"}}
