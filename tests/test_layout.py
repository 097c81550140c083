"""The folders are the pipeline's stages: each stage package imports only what its docstring allows.

config -> aws -> sources -> crawl, with store beside them: a stage never reaches up (sources never
imports the run, the store never imports the sources). boto3 is called only at the AWS edge and
pyarrow only by the store and the readers of the dataset.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "crawler"
#: Modules every stage may use: the exception types, outcomes, progress counters, safe display.
SHARED = {"crawler", "crawler.__version__", "crawler.errors", "crawler.outcomes", "crawler.progress", "crawler.listing"}
#: What each stage package may import from the crawler besides itself and SHARED.
ALLOWED = {
    "config": set(),
    "aws": {"crawler.config"},
    "sources": {"crawler.config", "crawler.aws"},
    "store": {"crawler.config"},
    "crawl": {"crawler.config", "crawler.aws", "crawler.sources", "crawler.store"},
    "analysis": {"crawler.store"},
    "report": {"crawler.store", "crawler.analysis"},
}
#: Third-party packages only some stages may import.
RESTRICTED = {"boto3": {"aws"}, "botocore": {"aws", "sources"}, "pyarrow": {"store", "analysis"}}


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports (``from crawler import x`` counts as ``crawler.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" if node.module == "crawler" else node.module
                         for alias in node.names)
    return found


def stage_modules() -> list[tuple[str, Path]]:
    return [(stage, path) for stage in ALLOWED for path in sorted((PACKAGE / stage).glob("*.py"))]


@pytest.mark.parametrize(("stage", "path"), stage_modules(), ids=lambda value: str(value).rsplit("/crawler/", 1)[-1])
def test_a_stage_imports_only_the_stages_below_it(stage: str, path: Path) -> None:
    allowed = {f"crawler.{stage}", *ALLOWED[stage]}
    crawler_imports = {name for name in imports(path) if name.startswith("crawler")}
    wrong = sorted(name for name in crawler_imports
                   if name not in SHARED and not any(name == prefix or name.startswith(f"{prefix}.")
                                                     for prefix in allowed))
    assert wrong == [], f"{path.name} ({stage}) may not import {wrong}"


@pytest.mark.parametrize(("stage", "path"), stage_modules(), ids=lambda value: str(value).rsplit("/crawler/", 1)[-1])
def test_aws_and_arrow_are_imported_only_where_they_belong(stage: str, path: Path) -> None:
    top_level = {name.split(".")[0] for name in imports(path)}
    wrong = sorted(package for package, stages in RESTRICTED.items() if package in top_level and stage not in stages)
    assert wrong == [], f"{path.name} ({stage}) may not import {wrong}"


def test_every_stage_package_says_what_it_holds_and_may_import() -> None:
    for stage in ("config", "aws", "sources", "crawl", "store"):
        docstring = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text(encoding="utf-8")))
        assert docstring and "May import" in docstring, stage
