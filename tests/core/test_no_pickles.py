"""The service never unpickles: every ``np.load`` in core and service passes ``allow_pickle=False``, and neither
package imports a module that unpickles (tests/service/test_bad_artifacts.py shows a pickled array refused)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(p for package in ("core", "service") for p in (REPO / package).rglob("*.py"))
UNPICKLING_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "joblib",
    "cloudpickle",
    "shelve",
    "marshal",
}


def pickle_problems(source: str) -> list[str]:
    """Lines that could unpickle: imports of pickling modules, ``np.load`` without ``allow_pickle=False``."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            problems += [
                f"line {node.lineno}: imports {n}"
                for n in names
                if n.split(".")[0] in UNPICKLING_MODULES
            ]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else ""
        if node.func.attr == "load" and owner_name in {"np", "numpy"}:
            safe = any(
                k.arg == "allow_pickle"
                and isinstance(k.value, ast.Constant)
                and k.value.value is False
                for k in node.keywords
            )
            if not safe:
                problems.append(f"line {node.lineno}: np.load without allow_pickle=False")
        elif node.func.attr == "read_pickle":
            problems.append(f"line {node.lineno}: read_pickle")
    return problems


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import numpy as np\nnp.load(p, allow_pickle=False)\n", []),
        ("import numpy as np\nnp.load(p)\n", ["line 2: np.load without allow_pickle=False"]),
        ("np.load(p, allow_pickle=True)\n", ["line 1: np.load without allow_pickle=False"]),
        ("import pickle\n", ["line 1: imports pickle"]),
        ("from joblib import load\n", ["line 1: imports joblib"]),
        ("pd.read_pickle(p)\n", ["line 1: read_pickle"]),
    ],
)
def test_the_check_catches_unpickling(source: str, expected: list[str]) -> None:
    assert pickle_problems(source) == expected


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(REPO)) for p in MODULES])
def test_core_and_service_never_unpickle(path: Path) -> None:
    assert pickle_problems(path.read_text()) == []


def test_every_np_load_is_seen() -> None:
    """The check reads the calls the packages make: at least the item table, popularity and basis loads."""
    calls = sum(p.read_text().count("np.load(") for p in MODULES)
    assert calls >= 3
