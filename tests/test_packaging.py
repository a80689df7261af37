"""The serving image's dependency set (the ``serve`` extra) pulls in no torch and no training stack.

Walks the installed distributions' declared requirements from each ``serve`` requirement (extras and environment
markers evaluated), so a new serving dependency that drags torch in fails here, not in the container build.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"torch", "sentence-transformers", "transformers", "pandas", "safetensors"}


def _closure(requirements: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset(Requirement(r).extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            declared = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (e.g. a platform-specific wheel): nothing below it to walk
        for line in declared:
            child = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in envs):
                todo.append((child, frozenset(child.extras)))
    return {k.split("[")[0] for k in seen}


def test_the_serve_extra_installs_without_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    serve = project["optional-dependencies"]["serve"]
    closure = _closure(serve + project["dependencies"])
    assert {
        "fastapi",
        "onnxruntime",
        "redis",
        "faiss-cpu",
        "uvicorn",
    } <= closure  # the walk reached them
    assert not closure & FORBIDDEN, sorted(closure & FORBIDDEN)


def test_the_train_extra_does_pull_torch() -> None:
    """The same walk finds torch where it is declared: the check above can fail."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch" in _closure(project["optional-dependencies"]["train"])
