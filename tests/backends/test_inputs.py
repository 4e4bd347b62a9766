"""Chat inputs (`plphp.backends.inputs`), and what the backend may import."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import plphp.backends
from plphp.backends.inputs import conversation

BACKEND_DIR = pathlib.Path(plphp.backends.__file__).parent
FORBIDDEN = ("plphp.models", "plphp.tasks")


def test_conversation_puts_the_images_first_unless_told_to_place_them_at_markers():
    question = "compare <image> and <image>"
    first = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": question}]
    assert conversation(question, 2) == [{"role": "user", "content": first}]
    placed = [
        {"type": "text", "text": "compare "},
        {"type": "image"},
        {"type": "text", "text": " and "},
        {"type": "image"},
    ]
    assert conversation(question, 2, "<image>") == [{"role": "user", "content": placed}]
    assert conversation("what is this", 1, "<image>") == conversation("what is this", 1)
    assert conversation("no picture", 0) == [{"role": "user", "content": [{"type": "text", "text": "no picture"}]}]


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_backend_imports_neither_the_models_nor_the_tasks():
    for path in sorted(BACKEND_DIR.glob("*.py")):
        bad = sorted(name for name in _imported_modules(path) if name.startswith(FORBIDDEN))
        assert not bad, f"{path.name} imports {bad}"
    code = (
        "import importlib, pkgutil, sys\n"
        "import plphp.backends\n"
        "for module in pkgutil.iter_modules(plphp.backends.__path__):\n"
        "    importlib.import_module('plphp.backends.' + module.name)\n"
        f"print(sorted(name for name in sys.modules if name.startswith({FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "[]"
