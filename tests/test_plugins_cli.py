"""Run-time plugins on the command line: `--plugin MODULE` anywhere, and `PLPHP_PLUGINS`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plphp.cli import split_plugins
from plphp.errors import PlphpError

#: The example third-party plugin, copied outside any package so only --plugin / PLPHP_PLUGINS can find it.
PLUGIN = Path(__file__).resolve().parent / "plugin_example" / "every_other.py"


@pytest.fixture()
def plugin_dir(tmp_path):
    shutil.copy(PLUGIN, tmp_path / "every_other_plugin.py")
    (tmp_path / "policy.yaml").write_text(
        "preset: plphp\nallocator: {name: uniform, retention: 0.5}\nselector: {name: every_other}\n"
    )
    return tmp_path


def _plphp(args, folder, extra_env=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    env.pop("PLPHP_PLUGINS", None)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "plphp", *args], capture_output=True, text=True, cwd=folder, env=env, timeout=600
    )


def test_split_plugins_finds_the_option_anywhere():
    assert split_plugins(["demo", "--plugin", "a", "--arch", "x", "--plugin=b"]) == (
        ["a", "b"],
        ["demo", "--arch", "x"],
    )
    with pytest.raises(PlphpError, match="a module name must follow"):
        split_plugins(["demo", "--plugin"])


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_plugin_selector_runs_from_a_yaml_file_in_demo_and_eval(plugin_dir, how):
    if how == "option":
        extra, env = ["--plugin", "every_other_plugin"], None
    else:
        extra, env = [], {"PLPHP_PLUGINS": "every_other_plugin"}
    demo = _plphp(
        ["demo", *extra, "--policy", "policy.yaml", "--max-new-tokens", "3", "--png", "kept.png"], plugin_dir, env
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "EveryOther" in demo.stdout
    evaluated = _plphp(
        [
            "eval",
            *extra,
            "--policy",
            "policy.yaml",
            "--num-items",
            "2",
            "--batch-size",
            "2",
            "--no-recall",
            "--out",
            "out",
        ],
        plugin_dir,
        env,
    )
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    assert (plugin_dir / "out" / "items.jsonl").is_file()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_module_that_cannot_be_imported_is_one_line_naming_it(tmp_path, how):
    if how == "option":
        done = _plphp(["--plugin", "no_such_plugin_module", "policies"], tmp_path)
    else:
        done = _plphp(["policies"], tmp_path, {"PLPHP_PLUGINS": "no_such_plugin_module"})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).strip().splitlines() if line.strip()]
    assert len(lines) <= 2 and "no_such_plugin_module" in lines[0] and "Traceback" not in done.stderr
