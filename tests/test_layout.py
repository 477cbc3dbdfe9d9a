"""The probe's rooms stay readable: no class over 150 lines, no function over 60, no
module over 400 in probe/, rate/ and compare/; each folder says what it owns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "tcpceiling"
ROOMS = ("probe", "rate", "compare")
MODULE_MOST, CLASS_MOST, FUNCTION_MOST = 400, 150, 60


def modules() -> list[Path]:
    return sorted(p for room in ROOMS for p in (SRC / room).rglob("*.py"))


def too_long(path: Path) -> list[str]:
    text = path.read_text()
    out = []
    if len(text.splitlines()) > MODULE_MOST:
        out.append(f"{path.name}: {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        size = (node.end_lineno or node.lineno) - node.lineno + 1
        most = CLASS_MOST if isinstance(node, ast.ClassDef) else FUNCTION_MOST
        if size > most:
            out.append(f"{type(node).__name__} {node.name}: {size} lines")
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_class_function_or_module_too_long(path: Path) -> None:
    assert not too_long(path)


def test_each_folder_says_what_it_owns() -> None:
    folders = [SRC / r for r in ROOMS] + [p for p in (SRC / "probe").iterdir() if p.is_dir()]
    for folder in folders:
        if folder.name == "__pycache__":
            continue
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and len(doc) > 80, folder
