"""Wheels for a GPU machine without a package registry: download them here, install the missing ones there.

    python benchmarks/gpu/wheels.py download --python 3.12 --dest .gpu-wheels   # `make gpu-wheels`
    python benchmarks/gpu/wheels.py install --wheels .gpu-wheels --target DIR   # benchmarks/gpu/check.sh

`download` fetches, for Linux x86_64 and one CPython version, binary wheels of plphp's dependencies
(pyproject.toml, torch left out: the GPU machine brings its CUDA build) plus pytest, hypothesis and
accelerate, with transformers pinned to the version installed here when it is in the declared range.
Packages named in `--skip` (default numpy, which every machine with transformers has) are left out
to keep the folder small. `install` asks pip which of the requirements this interpreter lacks (a
dry run resolved against what is installed, from the folder only) and installs those wheels into
`--target` (put it first on PYTHONPATH): nothing installed is changed. Standard library only, since
it runs before plphp's dependencies exist.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64"]
EXTRA = ["pytest>=8", "hypothesis>=6.100"]  # the tests
#: Installed when they can be: accelerate for the device_map test (it skips without), setuptools for
#: a torch whose metadata asks for a newer one than the machine has.
OPTIONAL = ["accelerate>=1.0"]
MANIFEST = "MANIFEST.json"


def _name(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def requirements() -> list[str]:
    """plphp's dependencies without torch, and the test and device_map extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [req for req in project["dependencies"] if _name(req) != "torch"] + EXTRA


def _pinned(reqs: list[str]) -> list[str]:
    """Transformers pinned to the version installed here, when it is one the range allows (the tested one)."""
    from pip._vendor.packaging.requirements import Requirement

    try:
        local = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return reqs
    tested = [
        f"transformers=={local}" for req in reqs if _name(req) == "transformers" and local in Requirement(req).specifier
    ]
    return [req for req in reqs if not tested or _name(req) != "transformers"] + tested


def download(python: str, dest: Path, skip: list[str]) -> int:
    tag = "cp" + python.replace(".", "")
    reqs = _pinned(requirements() + OPTIONAL)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", python]
    args += ["--implementation", "cp", "--abi", tag, *(f"--platform={p}" for p in PLATFORMS), "--dest", str(dest)]
    # accelerate needs torch, which must not be downloaded: fetch the rest first, then accelerate alone
    main = [req for req in reqs if _name(req) != "accelerate"]
    if subprocess.run([*args, *main, "psutil", "setuptools>=77"]).returncode != 0:
        return 1
    if subprocess.run([*args, "--no-deps", *(req for req in reqs if _name(req) == "accelerate")]).returncode != 0:
        return 1
    skipped = []
    for wheel in dest.glob("*.whl"):
        if _name(wheel.name.split("-")[0]) in {_name(s) for s in skip}:
            wheel.unlink()
            skipped.append(wheel.name)
    files = sorted(wheel.name for wheel in dest.glob("*.whl"))
    manifest = {"python": python, "abi": tag, "platforms": PLATFORMS, "requirements": reqs, "skipped": skipped}
    (dest / MANIFEST).write_text(json.dumps(manifest | {"files": files}, indent=2))
    size = sum(wheel.stat().st_size for wheel in dest.glob("*.whl"))
    print(f"{len(files)} wheels for CPython {python} (linux x86_64), {size / 2**20:.1f} MiB, in {dest}")
    print(f"left out (expected on the GPU machine): {', '.join(skipped) or 'nothing'}")
    return 0


def install(wheels: Path, target: Path) -> int:
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    manifest_path = wheels / MANIFEST
    if not manifest_path.exists():
        print(f"error: {manifest_path} is missing; run `make gpu-wheels` on a machine with the registry")
        return 2
    manifest = json.loads(manifest_path.read_text())
    if manifest["python"] != running:
        print(
            f"WARNING: the wheels in {wheels} are for CPython {manifest['python']}, this is Python {running} "
            f"({sys.executable}). Binary wheels will not match; if a package below is missing, run "
            f"`make gpu-wheels GPU_PYTHON={running}` on a machine with the registry and bring the folder again."
        )
    try:
        import torch
    except ImportError:
        print(f"error: {sys.executable} has no torch; this check needs the machine's own CUDA build of PyTorch")
        return 2
    print(
        f"python {running} at {sys.executable}; torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
    )
    plan = _plan(wheels, requirements(), manifest["python"], running)
    if plan is None:
        return 1
    optional = _plan(wheels, requirements() + OPTIONAL, manifest["python"], running, quiet=True)
    if optional is None:
        print(f"note: {', '.join(OPTIONAL)} cannot be installed from {wheels}; the device_map test will skip")
    plan = optional or plan
    if not plan:
        print("every requirement is already installed; nothing to do")
        return 0
    files = [item["download_info"]["url"].removeprefix("file://") for item in plan]
    names = [f"{item['metadata']['name']} {item['metadata']['version']}" for item in plan]
    print(f"installing into {target}: {', '.join(names)}")
    target.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade", "--no-compile"]
    args += ["--disable-pip-version-check", "--target", str(target), *files]
    return subprocess.run(args, env={**os.environ, "PIP_NO_WARN_SCRIPT_LOCATION": "1"}).returncode


def _plan(wheels: Path, reqs: list[str], built_for: str, running: str, quiet: bool = False) -> list[dict] | None:
    """What pip would install from `wheels` for `reqs` here (a dry run against what is installed); None
    when the folder cannot satisfy them."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        args = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report)]
        args += ["--no-index", "--find-links", str(wheels), "--only-binary=:all:", "--disable-pip-version-check"]
        done = subprocess.run([*args, *reqs], capture_output=True, text=True)
        if done.returncode == 0:
            return json.loads(report.read_text())["install"]
    if not quiet:
        print(done.stdout + done.stderr)
        print(
            f"error: the wheels in {wheels} (CPython {built_for}) cannot satisfy {' '.join(reqs)} on Python "
            f"{running}; pip's message above names what is missing. Run `make gpu-wheels GPU_PYTHON={running}` "
            "(add GPU_WHEELS_SKIP= to leave nothing out) where the registry is reachable."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch the wheels (needs the registry)")
    get.add_argument("--python", default="3.12", help="the GPU machine's CPython version, e.g. 3.12")
    get.add_argument("--dest", type=Path, default=REPO / ".gpu-wheels")
    get.add_argument("--skip", default="numpy", help="comma-separated packages to leave out ('' for none)")
    put = commands.add_parser("install", help="install the missing ones into --target (no registry)")
    put.add_argument("--wheels", type=Path, default=REPO / ".gpu-wheels")
    put.add_argument("--target", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "download":
        return download(args.python, args.dest, [s for s in args.skip.split(",") if s])
    return install(args.wheels, args.target)


if __name__ == "__main__":
    raise SystemExit(main())
