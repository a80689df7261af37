"""The service's code stays readable: every function at most 60 lines, every module at most 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def test_service_functions_and_files_stay_short() -> None:
    too_long = []
    for path in sorted(SERVICE.glob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long
