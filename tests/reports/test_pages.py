"""The pages come from reports/ alone: Jinja2 templates, one stylesheet, one crash reader."""

from __future__ import annotations

import ast
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from demist_bids.config import Config
from demist_bids.reports.render import fmt, stylesheet
from tests.group import cohort as toy

PACKAGE = Path(__file__).resolve().parents[2] / "demist_bids"


class _Item:
    def __init__(self, subject: str, session: str | None = None):
        self.subject, self.session = subject, session
        self.bids_name = f"sub-{subject}" + (f"_ses-{session}" if session else "")


def _group_page(c: toy.Cohort) -> str:
    from demist_bids.cli.group import run_group

    config = Config()
    config.execution.bids_dir, config.execution.output_dir = c.bids, c.out
    run_group(config)
    return (c.out / "group_PSR.html").read_text()


def _evaluation_page(out: Path) -> str:
    from demist_bids.reports.evaluation import write_evaluation

    rows = [{"method": m, "fold": f, "bids_name": f"sub-{f}{s}", "psnr": 20.0 + s, "ssim": 0.8}
            for m in ("demist", "linear") for f in (0, 1) for s in range(2)]
    rng = np.random.default_rng(0)
    roc = {"demist": (rng.normal(1, 1, 50), rng.normal(0, 1, 20))}
    return write_evaluation(pd.DataFrame(rows), roc, out)["html"].read_text()


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    from demist_bids.reports.subject import write_subject_reports

    c = toy.make_cohort(tmp_path_factory.mktemp("pages"))
    for sub in ("01", "02"):
        c.add_result(sub, report=False)
    write_subject_reports(c.out, [_Item("01"), _Item("02")], run_uuid="run-1")
    return {"subject": (c.out / "sub-01.html").read_text(), "group": _group_page(c),
            "evaluation": _evaluation_page(tmp_path_factory.mktemp("evaluation"))}


def _head_styles(page: str) -> list[str]:
    head = page.split("</head>", 1)[0]
    return re.findall(r"<style>(.*?)</style>", head, flags=re.S)


def test_every_page_inlines_the_one_stylesheet_and_nothing_from_outside(pages):
    css = stylesheet()
    assert ".strip" in css and ".reportlet svg" in css and "table.sortable" in css
    for name, page in pages.items():
        assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">"), name
        assert _head_styles(page) == [css], f"{name} does not inline style.css alone"
        assert not re.search(r"<link\b|<script[^>]+src=|@import|url\(\s*['\"]?http", page), name
        assert all(s.startswith("data:image/png;base64,")
                   for s in re.findall(r"""\ssrc=["']([^"']+)""", page)), name


def test_the_subject_page_has_its_sections_and_no_more(pages):
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", pages["subject"])
    assert headings == ["Summary", "Processing steps applied", "About", "Methods", "Errors"]
    assert "<script" not in pages["subject"]
    nav = re.findall(r'<a href="#(\w+)">', pages["subject"])
    assert nav == ["summary", "about", "methods", "errors"]
    assert all(f"id='{anchor}'" in pages["subject"] for anchor in nav)


def test_values_are_formatted_one_way():
    assert [fmt(v) for v in (None, float("nan"), np.float32(0.123456), True, np.bool_(False),
                             ["a", 1.0], [], 3, "x")] == [
        "n/a", "n/a", "0.1235", "yes", "no", "a; 1", "none", "3", "x"]


def test_one_crash_reads_the_same_on_the_subject_and_group_pages(tmp_path):
    """A crash file Nipype wrote, under a subject's log: both pages give its innermost error."""
    from demist_bids.reports.subject import write_subject_reports
    from tests.utils.test_crashes import nipype_crash

    crash = nipype_crash(tmp_path / "nipype")
    c = toy.make_cohort(tmp_path / "cohort")
    c.add_result("01", report=False)
    c.add_input("02", "2")
    log = c.out / "sub-02" / "log" / "run-1"
    log.mkdir(parents=True)
    shutil.copy(crash, log / crash.name)
    write_subject_reports(c.out, [_Item("01"), _Item("02", "2")], run_uuid="run-1")
    error = "ValueError: brain mask of sub-01_ses-2 is empty"
    assert f"<div class='error'>{crash.name}: {error}</div>" in (c.out / "sub-02.html").read_text()
    group = _group_page(c)
    assert f"<code>{error}</code>" in group
    assert "demist_wf.single_subject_01_ses_2_synthesis" in group


HTML_TAG = re.compile(
    r"<(?:!DOCTYPE|html|head|body|style|script|table|thead|tbody|tr|td|th|div|span|section|"
    r"header|footer|nav|main|ul|ol|li|h[1-6]|p|a|img|code|b|br)(?=[\s>/])", re.I)

def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def markup_outside_reports(package: Path = PACKAGE) -> list[tuple[str, str]]:
    """(module, string) for every string literal outside reports/ holding an HTML tag."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module.startswith("reports/"):
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in skip and HTML_TAG.search(node.value)):
                found.append((module, node.value))
    return found


def test_the_check_for_markup_can_fail(tmp_path):
    (tmp_path / "group").mkdir()
    (tmp_path / "group" / "page.py").write_text(
        '"""Docs may say <table> freely."""\nx = f"<table class=\'a\'>{1}</table>"\ny = "a < b"\n')
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "page.py").write_text('x = "<html>"\n')
    assert markup_outside_reports(tmp_path) == [("group/page.py", "<table class='a'>")]


def test_no_module_outside_reports_writes_markup():
    found = markup_outside_reports()
    assert not found, "HTML outside demist_bids/reports: " + "; ".join(
        f"{m}: {t[:60]!r}" for m, t in found)


def test_the_templates_ship_with_the_package():
    """pyproject's package-data names every file under reports/templates (the wheel has them)."""
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["demist_bids.reports"]
    reports = PACKAGE / "reports"
    shipped = {p for pattern in patterns for p in reports.glob(pattern)}
    files = {p for p in (reports / "templates").rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)
    assert any(d.startswith("jinja2") for d in project["project"]["dependencies"])
