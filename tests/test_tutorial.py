"""docs/tutorials/write-a-policy.md runs as written: its package is installed (a dist-info with the
entry points of its pyproject, as pip writes it), its tests pass with the kit's pytest plugin in a
fresh process, and plphp finds its selector and preset by name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "write-a-policy.md"


def _files() -> dict[str, str]:
    """The tutorial's code blocks that carry a `title="path"`."""
    blocks = re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', TUTORIAL.read_text(), flags=re.S)
    return {path: body for path, body in blocks}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("tutorial")
    package = root / "plphp-coverage"
    for path, body in _files().items():
        target = (package if path != "coverage.yaml" else root) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    site = root / "site"
    (site / "plphp_coverage").mkdir(parents=True)
    (site / "plphp_coverage" / "__init__.py").write_text((package / "plphp_coverage" / "__init__.py").read_text())
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (dist / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) for group, items in groups.items())
    )
    pythonpath = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    # One thread: tiny models gain nothing from two, and lose a lot when the machine is busy.
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    return root, package, env


def test_the_tutorial_has_its_files():
    assert {"pyproject.toml", "plphp_coverage/__init__.py", "tests/test_coverage.py", "coverage.yaml"} <= set(_files())


def test_the_tutorial_package_passes_its_tests_with_the_kit(installed):
    root, package, env = installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(package / "tests"), "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 passed" in result.stdout


def test_plphp_finds_the_tutorial_selector_by_name(installed):
    root, _, env = installed
    code = (
        "import plphp; from plphp.registry import get_registry; r = get_registry(); "
        "print('coverage_topk' in r.components('selector'), 'plphp-coverage' in r.presets()); "
        "p = plphp.load_policy('coverage.yaml'); print(p.selector.name, p.selector.params.saliency)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.stdout.split() == ["True", "True", "coverage_topk", "0.3"], loaded.stderr
