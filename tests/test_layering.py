"""The tree tells the architecture: layers import the shared package and never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.flows import REPO

pytestmark = pytest.mark.unit

SHARED = "lambda_contracts"
LAYERS = ("sources", "speed_layer", "batch_layer", "serving_layer", "infra")
COMPOSERS = ("lambdactl", "dags", "benchmarks")
"""Composition roots: they start or drive the layers, so they may import them."""
PROJECT = (SHARED, *LAYERS, *COMPOSERS)


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Module path -> the project's top-level packages it imports (at any depth of the module)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names & set(PROJECT)
    return found


def imports_between_packages() -> dict[str, set[str]]:
    """Top-level package -> the other project packages its modules import."""
    edges: dict[str, set[str]] = {}
    for package in PROJECT:
        for imported in imported_packages(REPO / package).values():
            edges.setdefault(package, set()).update(imported - {package})
    return edges


def test_every_top_level_package_is_known() -> None:
    """A new top-level package must take a side here (layer, shared or composer) before it lands."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} | {"dags"}
    assert packages - {"tests"} == set(PROJECT)


def test_the_shared_package_imports_no_layer() -> None:
    assert imports_between_packages()[SHARED] == set()


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_shared_package(layer: str) -> None:
    offending = {
        module: sorted(imported - {SHARED, layer})
        for module, imported in imported_packages(REPO / layer).items()
        if imported - {SHARED, layer}
    }
    assert offending == {}, f"{layer} must meet other layers through topics and files, not imports"


def test_dags_call_only_the_batch_layer() -> None:
    assert imports_between_packages()["dags"] <= {SHARED, "batch_layer"}


def test_the_import_graph_as_documented() -> None:
    """The whole graph at once, so a change to it shows up as one readable diff."""
    edges = imports_between_packages()
    assert {package: sorted(imported) for package, imported in edges.items() if package in LAYERS} == {
        layer: [SHARED] for layer in LAYERS
    }
