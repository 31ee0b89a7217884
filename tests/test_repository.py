"""The repository as a newcomer meets it: small functions, a short README, docs whose links
resolve, and no source that points at a document the repository does not have."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "worker", "service")
MAX_FUNCTION_LINES = 50
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def functions_over(limit: int) -> list[str]:
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > limit:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                    f"({length} lines)")
    return long


def test_no_function_in_the_packages_is_over_50_lines() -> None:
    assert functions_over(MAX_FUNCTION_LINES) == []
    assert functions_over(5), "the check must be able to find a long function"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines"
    text = "\n".join(lines)
    for command in ("make demo", "make test"):
        assert command in text


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken, checked = [], 0
    for document in documents():
        for target in LINK.findall(document.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            checked += 1
            path = (document.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
    assert broken == []
    assert checked >= 10  # the README links to the docs, and they to the code


def test_no_source_cites_a_document_the_repository_lacks() -> None:
    cited = re.compile(r"\b([\w./-]+\.md)\b")
    missing = []
    sources = [p for package in (*PACKAGES, "tests", "bench", "deploy") for p in
               (ROOT / package).rglob("*") if p.suffix in {".py", ".sh", ".js", ".html"}]
    for path in [*sources, ROOT / "pyproject.toml", ROOT / "Makefile",
                 ROOT / "docker-compose.yml"]:
        for name in cited.findall(path.read_text()):
            if not any((base / name).exists() for base in (ROOT, ROOT / "docs", path.parent)):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert missing == []


def test_the_benchmarks_page_is_generated_from_the_report() -> None:
    """docs/benchmarks.md is ``python -m bench.docs`` of bench/out/report.json, not a copy
    edited by hand."""
    import json

    from bench.docs import PAGE, REPORT, render

    report = json.loads(REPORT.read_text())
    assert PAGE.read_text() == render(report)
    assert "| scaling 2 workers x 1 thread, mpi |" in render(report)
