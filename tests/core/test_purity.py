"""edge.core stays pure: stdlib + numpy only (ARCHITECTURE.md, layers)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "edge" / "core"
ALLOWED_THIRD_PARTY = {"numpy"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_only_stdlib_numpy_and_itself() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert files, "no core modules found"
    bad = {}
    for f in files:
        extra = {
            r for r in imported_roots(f)
            if r not in sys.stdlib_module_names and r not in ALLOWED_THIRD_PARTY and r != "edge"
        }
        if extra:
            bad[f.name] = sorted(extra)
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge."):
                assert node.module.startswith("edge.core"), f"{f.name} imports {node.module}"
    assert not bad, f"core modules import outside stdlib+numpy: {bad}"


def test_the_checker_catches_an_impure_import(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import cv2\nfrom paho.mqtt import client\nimport json\n")
    roots = imported_roots(p)
    assert {"cv2", "paho"} <= roots
    assert "json" in sys.stdlib_module_names
