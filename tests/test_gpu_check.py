"""benchmarks/gpu: the wheel helper's install path and the check script's shell, on the CPU (the whole
check runs with `benchmarks/gpu/check.sh --cpu-dry-run`; see docs/benchmarks.md, "The one-command GPU check")."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"


def _wheels():
    spec = importlib.util.spec_from_file_location("gpu_wheels", GPU / "wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_requirements_are_plphps_without_torch_plus_the_tests():
    reqs = _wheels().requirements()
    names = [_wheels()._name(req) for req in reqs]
    assert "torch" not in names and {"transformers", "pydantic", "pytest", "hypothesis"} <= set(names)
    assert any(req.startswith("transformers>=") for req in reqs), "the declared range, from pyproject.toml"


def test_install_adds_nothing_where_everything_is_installed_and_names_a_python_mismatch(tmp_path):
    other = "3.99"
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"python": other, "files": []}))
    args = [
        sys.executable,
        str(GPU / "wheels.py"),
        "install",
        "--wheels",
        str(tmp_path),
        "--target",
        str(tmp_path / "t"),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the wheels in {tmp_path} are for CPython {other}" in done.stdout
    assert "make gpu-wheels GPU_PYTHON=" in done.stdout and "nothing to do" in done.stdout
    assert not (tmp_path / "t").exists()


def test_install_without_a_manifest_is_a_one_line_error(tmp_path):
    args = [
        sys.executable,
        str(GPU / "wheels.py"),
        "install",
        "--wheels",
        str(tmp_path),
        "--target",
        str(tmp_path / "t"),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "run `make gpu-wheels`" in done.stdout


def test_the_check_script_parses_and_explains_itself():
    script = GPU / "check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    done = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--cpu-dry-run" in done.stdout
    bad = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option --fast" in bad.stdout
