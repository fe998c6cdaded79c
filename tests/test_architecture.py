"""The package map stays acyclic: no subpackage of demist_bids imports one that imports it back.

Walks every module's imports with ``ast`` (module-level and function-level alike,
relative and absolute), builds the graph between subpackages and fails on any
strongly connected component of more than one subpackage, naming the files.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "demist_bids"


def _imported(package: Path, path: Path, node: ast.AST) -> list[str]:
    """Dotted names below ``demist_bids`` that ``node`` imports, from module ``path``."""
    here = list(path.relative_to(package).parts[:-1])
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = here[: len(here) - (node.level - 1)]
            return [".".join(base + ([node.module] if node.module else []))]
        if node.module and node.module.startswith("demist_bids."):
            return [node.module.removeprefix("demist_bids.")]
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("demist_bids.") for a in node.names if a.name.startswith("demist_bids.")]
    return []


def subpackage_graph(package: Path = PACKAGE) -> dict[tuple[str, str], set[str]]:
    """(importer, imported) subpackage pairs, each with the importing files."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        if len(parts) == 1:  # top-level modules (api, config, exceptions) are shared leaves
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(package, path, node):
                target = name.split(".")[0]
                if target and target != parts[0] and (package / target).is_dir():
                    edges[(parts[0], target)].add(str(path.relative_to(package)))
    return edges


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one subpackage (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle(tmp_path):
    """The check itself can fail: two subpackages that import each other are found."""
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "mod.py").write_text(f"from demist_bids.{other}.mod import x\nfrom ..{other} import y\n")
    assert cycles(subpackage_graph(tmp_path)) == [["alpha", "beta"]]


def test_no_import_cycles_between_subpackages():
    edges = subpackage_graph()
    assert ("training", "workflows") in edges  # the walk sees real imports
    found = cycles(edges)
    detail = "; ".join(
        f"{' <-> '.join(c)}: " + ", ".join(f"{a}->{b} ({', '.join(sorted(edges[(a, b)]))})"
                                          for a in c for b in c if (a, b) in edges)
        for c in found)
    assert not found, f"import cycles between subpackages: {detail}"


def test_evaluation_is_pure_numbers():
    """evaluation/ imports no torch, no Nipype and no other demist subpackage but utils/."""
    for path in (PACKAGE / "evaluation").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                top = name.split(".")
                assert top[0] not in {"torch", "monai", "nipype", "niworkflows"}, f"{path.name} imports {name}"
                if top[0] == "demist_bids" and len(top) > 1:
                    assert top[1] in {"evaluation", "utils", "exceptions"}, f"{path.name} imports {name}"


def _documented_map() -> dict[str, set[str]]:
    """docs/architecture.md's package table: package -> the packages it may import."""
    table = {}
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith("`"):
            table[cells[0].strip("`")] = {c.strip() for c in cells[2].split(",") if c.strip()}
    return table


def test_the_architecture_page_names_every_package_and_every_import():
    table = _documented_map()
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(table) == packages, "docs/architecture.md's package table differs from demist_bids/"
    for allowed in table.values():
        assert allowed <= packages, f"docs/architecture.md names packages that do not exist: {allowed - packages}"
    undocumented = sorted(f"{a} -> {b} ({', '.join(sorted(files))})"
                          for (a, b), files in subpackage_graph().items() if b not in table[a])
    assert not undocumented, "imports docs/architecture.md does not allow: " + "; ".join(undocumented)
