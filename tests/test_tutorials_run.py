"""The step-by-step tutorials run as written: in a fresh folder, each file block is written and each
`$` command of a console block runs, in page order (`python` and `plphp` are this interpreter's),
and every command must succeed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
PAGES = ["prune-from-a-config.md", "compare-policies.md", "look-inside.md", "support-a-new-architecture.md"]
BLOCK = re.compile(r'```(\w+)(?: title="([^"]+)")?\n(.*?)```', re.S)


def steps(page: Path) -> list[tuple[str, str, str]]:
    """`("file", path, body)` and `("command", line, "")` in page order."""
    out = []
    for language, title, body in BLOCK.findall(page.read_text()):
        if title:
            out.append(("file", title, body))
        elif language == "console":
            out.extend(("command", line[2:].strip(), "") for line in body.splitlines() if line.startswith("$ "))
    return out


def _argv(line: str) -> tuple[list[str], dict[str, str]]:
    words = shlex.split(line)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    program, *rest = words
    if program == "python":
        return [sys.executable, *rest], env
    if program == "plphp":
        return [sys.executable, "-m", "plphp", *rest], env
    raise AssertionError(f"the tutorial runs {program!r}; only python and plphp are run by this test")


@pytest.mark.parametrize("name", PAGES)
def test_the_tutorial_runs_as_written(name, tmp_path):
    page = DOCS / name
    found = steps(page)
    assert any(kind == "command" for kind, _, _ in found) and any(kind == "file" for kind, _, _ in found)
    for kind, what, body in found:
        if kind == "file":
            target = tmp_path / what
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
            continue
        argv, extra = _argv(what)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100", **extra}
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{name}: `{what}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
