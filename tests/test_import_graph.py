"""No import circle inside any product package, type-checking imports included (the layers contract in
pyproject.toml orders training's packages; this holds module by module, inside each package too)."""

from __future__ import annotations

import grimp
import pytest


def _circles(package: str) -> list[tuple[str, ...]]:
    graph = grimp.build_graph(package, include_external_packages=False)
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append((module, *back))
    return circles


@pytest.mark.parametrize("package", ["core", "training", "exporter", "service"])
def test_no_import_circle(package: str) -> None:
    assert _circles(package) == []
