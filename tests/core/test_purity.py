"""The import contract: dependencies point inward (docs/architecture.md, "Layers").

* ``edge.core`` imports only the stdlib, numpy and itself;
* ``edge.common`` (shared by the unit and the control room) never imports the adapters, the
  app or the control room;
* ``edge.adapters`` never import ``edge.app``;
* ``controlroom`` imports ``edge.core`` and ``edge.common`` only.

Every import counts, including ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOWED_THIRD_PARTY = {"numpy"}

# package folder -> module prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "edge/core": ("edge.adapters", "edge.app", "edge.common", "controlroom"),
    "edge/common": ("edge.adapters", "edge.app", "controlroom"),
    "edge/adapters": ("edge.app", "controlroom"),
    "controlroom": ("edge.adapters", "edge.app"),
}


def imported_roots(path: Path) -> set[str]:
    return {m.split(".")[0] for m in imported_modules(path)}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module named by an import statement in ``path`` (at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mods: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module)
            mods.update(f"{node.module}.{a.name}" for a in node.names)
    return mods


def violations(
    folder: str, forbidden: tuple[str, ...], *, root: Path = REPO
) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for f in sorted((root / folder).rglob("*.py")):
        hits = sorted(
            m
            for m in imported_modules(f)
            if any(m == p or m.startswith(p + ".") for p in forbidden)
        )
        if hits:
            bad[str(f.relative_to(root))] = hits
    return bad


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports_point_inward(folder: str) -> None:
    assert list((REPO / folder).rglob("*.py")), f"no modules in {folder}"
    assert violations(folder, FORBIDDEN[folder]) == {}


def test_core_imports_only_stdlib_numpy_and_itself() -> None:
    files = sorted((REPO / "edge" / "core").rglob("*.py"))
    assert files, "no core modules found"
    bad = {}
    for f in files:
        extra = {
            r
            for r in imported_roots(f)
            if r not in sys.stdlib_module_names and r not in ALLOWED_THIRD_PARTY and r != "edge"
        }
        if extra:
            bad[f.name] = sorted(extra)
    assert not bad, f"core modules import outside stdlib+numpy: {bad}"


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import cv2\nfrom paho.mqtt import client\nimport json\n")
    roots = imported_roots(p)
    assert {"cv2", "paho"} <= roots
    assert "json" in sys.stdlib_module_names
    pkg = tmp_path / "edge" / "adapters"
    pkg.mkdir(parents=True)
    (pkg / "ok.py").write_text("from edge.core import messages\n")
    (pkg / "lazy.py").write_text("def f():\n    from edge.app.config import Config\n")
    assert violations("edge/adapters", FORBIDDEN["edge/adapters"], root=tmp_path) == {
        "edge/adapters/lazy.py": ["edge.app.config", "edge.app.config.Config"]
    }
