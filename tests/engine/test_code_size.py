"""Issue 9's size rule for the engine and the mail-authentication code: no module over 500
lines, no function over 60 (docstring included), so that each stays readable in one sitting.

Checked with :mod:`ast` on the source files, so a new long function fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "trio_smtp"
CHECKED: Final = ("engine", "verify")
MAX_MODULE_LINES: Final = 500
MAX_FUNCTION_LINES: Final = 60

SOURCES = sorted(p for d in CHECKED for p in (PACKAGE / d).rglob("*.py"))


def long_functions(source: str) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function or method over :data:`MAX_FUNCTION_LINES`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append((node.name, length))
    return found


def test_the_check_sees_a_long_function() -> None:
    body = "".join(f"    x = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}") == [("f", MAX_FUNCTION_LINES + 1)]
    method = body.replace("    ", "        ")
    assert long_functions(f"class C:\n    async def g(self):\n{method}") == [
        ("g", MAX_FUNCTION_LINES + 1)
    ]
    short = "".join(f"    x = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(f"def exactly_the_limit():\n{short}") == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    assert long_functions(source) == []
