"""The architecture of docs/architecture.md, enforced: who may import what, module sizes, process state.

Imports are read with `ast` (nothing is imported), so the test also covers imports inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plphp"

#: The core: components, types, shared math, the contract, policy and config, registry, report.
CORE = {
    "plphp.components",
    "plphp.contract",
    "plphp.errors",
    "plphp.hookspecs",
    "plphp.lazy",
    "plphp.ops",
    "plphp.policy",
    "plphp.registry",
    "plphp.report",
    "plphp.runconfig",
    "plphp.stats",
    "plphp.tables",
    "plphp.validation",
}
#: What sits above the backend: shipped models, tasks, and the faces (bench, evaluation, CLI, demo).
ABOVE_BACKEND = (
    "plphp.models",
    "plphp.tasks",
    "plphp.bench",
    "plphp.evaluation",
    "plphp.calibrate",
    "plphp.catalog",
    "plphp.cli",
    "plphp.options",
    "plphp.testing",
    "plphp.demo",
    "plphp.inspect",
    "plphp.integrations",
)
#: Faces for other harnesses (the lmms-eval model): they reach plphp, plphp never reaches them.
INTEGRATIONS = "plphp.integrations"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The modules `path` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from plphp import x`
    return names


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {
    name: {i for i in _imports(path) if i == "plphp" or i.startswith("plphp.")} for name, path in MODULES.items()
}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _real(names: set[str]) -> set[str]:
    """Imported names that are plphp modules (drops `from plphp.x import function` extras)."""
    return {n for n in names if n in MODULES}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ["plphp.policies"])))
def test_policies_import_no_transformers_no_backend_and_no_other_policy(module):
    path = MODULES[module]
    every = _imports(path)
    assert not {n for n in every if _within(n, ["transformers"])}, f"{module} imports transformers"
    plphp_imports = _real(IMPORTS[module])
    assert not {n for n in plphp_imports if _within(n, ["plphp.backends", *ABOVE_BACKEND])}
    if module != "plphp.policies":  # the package's __init__ registers its files
        others = {n for n in plphp_imports if _within(n, ["plphp.policies"])}
        assert not others, f"{module} imports another policy module: {sorted(others)}"


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_modules_import_no_backend_models_tasks_faces_or_policies(module):
    bad = {n for n in _real(IMPORTS[module]) if _within(n, ["plphp.backends", "plphp.policies", *ABOVE_BACKEND])}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_package_imports_only_the_core_eagerly():
    """`import plphp` loads no transformers: `plphp.apply` / `plphp.Session` load the backend on first use."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    eager = set()
    for node in tree.body:  # module level only: not inside functions or `if TYPE_CHECKING`
        if isinstance(node, ast.ImportFrom) and node.module:
            eager.add(node.module)
    assert eager - {"__future__", "typing"} <= CORE, sorted(eager - CORE)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ["plphp.backends"])))
def test_the_backend_imports_no_models_tasks_or_faces(module):
    bad = {n for n in _real(IMPORTS[module]) if _within(n, ABOVE_BACKEND)}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_nothing_outside_the_integrations_imports_them():
    """lmms-eval loads its model by the entry point's name; plphp itself never imports lmms-eval's face."""
    for module in MODULES:
        if not _within(module, [INTEGRATIONS]):
            bad = {n for n in _real(IMPORTS[module]) if _within(n, [INTEGRATIONS])}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_no_module_imports_torchvision():
    """torchvision cannot load next to the CPU build of torch here (the Makefile says why lmms-eval is
    installed without it)."""
    bad = sorted(m for m, path in MODULES.items() if any(_within(n, ["torchvision"]) for n in _imports(path)))
    assert not bad, f"{bad} import torchvision"


def test_no_import_cycle_between_plphp_modules():
    graph = {name: {n for n in _real(imports) if n != name} for name, imports in IMPORTS.items()}
    # A package's __init__ re-exporting its own modules is not a cycle with them.
    for name in graph:
        graph[name] = {n for n in graph[name] if not (MODULES[n].name == "__init__.py" and _within(name, [n]))}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_layering_test_sees_a_violation():
    """The checks above are not vacuous: they find the imports they forbid."""
    assert "plphp.ops" in _real(IMPORTS["plphp.policies.head_topk"])
    assert "plphp.backends.session" in _real(IMPORTS["plphp.backends.recall"])
    tree_import = _imports(MODULES["plphp.testing"])
    assert any(_within(n, ["plphp.backends"]) for n in tree_import), "function-level imports are seen"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_450_lines(path):
    assert len(path.read_text().splitlines()) <= 450


#: Scripts that cannot be thin over plphp: the GPU check's wheel installer runs on a bare machine
#: before plphp's dependencies exist, so it is standard library only (its docstring says so).
BOOTSTRAP_SCRIPTS = ("gpu/wheels.py",)


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").rglob("*.py")), ids=lambda p: p.name)
def test_each_benchmark_script_is_a_thin_command_line(path):
    if path.relative_to(ROOT / "benchmarks").as_posix() in BOOTSTRAP_SCRIPTS:
        assert "import plphp" not in path.read_text() and "from plphp" not in path.read_text()
        return
    assert len(path.read_text().splitlines()) < 150


def test_library_functions_leave_thread_counts_and_the_plotting_backend_alone(tmp_path):
    """The demo (model, generation, recall, picture) runs in a fresh process; afterwards torch's
    thread count is what the caller set and pyplot was never imported (no backend chosen)."""
    script = (
        "import sys, io, torch\n"
        "torch.set_num_threads(2)\n"
        "from rich.console import Console\n"
        "from plphp.demo import run_demo\n"
        f"run_demo(Console(file=io.StringIO()), arch='llava', max_new_tokens=2, png={str(tmp_path / 'k.png')!r})\n"
        "assert torch.get_num_threads() == 2, torch.get_num_threads()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "import matplotlib\n"
        "assert matplotlib.rcParams._get_backend_or_none() is None, matplotlib.rcParams._get_backend_or_none()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
