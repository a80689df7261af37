"""The product code stays readable: in core, training, exporter and service no function is over 60 lines and no
file over 400 (decorators and docstrings count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "training", "exporter", "service")
MODULES = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def function_lengths(source: str) -> dict[str, int]:
    """Lines of every function and method, from its first decorator to its last line."""
    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            lengths[node.name] = node.end_lineno - first + 1
    return lengths


def test_the_rule_counts_what_it_should() -> None:
    source = "@decorator\ndef f(\n    x,\n):\n    '''doc'''\n    return x\n"
    assert function_lengths(source) == {"f": 6}


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(REPO)) for p in MODULES])
def test_functions_and_files_stay_short(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_FILE_LINES
    long = {name: n for name, n in function_lengths(source).items() if n > MAX_FUNCTION_LINES}
    assert long == {}
