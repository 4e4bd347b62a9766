"""Run-time plugins on the command line: `--plugin MODULE` anywhere, and `PLPHP_PLUGINS`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from plphp.cli import split_plugins
from plphp.errors import PlphpError

PLUGIN = '''
"""A selector that lives outside plphp: evenly spaced vision tokens of each image, shared by all heads."""

import torch

import plphp
from plphp.ops import kept_count, pad_keep_indices


class Spaced(plphp.Selector):
    """Evenly spaced vision tokens of each image (the same for every head)."""

    name = "spaced_cli"

    def select(self, stats, retention, prompt, layer_idx):
        rows = []
        for b in range(prompt.batch_size):
            picked = []
            for segment in prompt.segments(b):
                k = kept_count(float(retention[b]), len(segment))
                picked.append(segment[torch.linspace(0, len(segment) - 1, k).round().long().unique()][:k])
            kept = torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)
            rows.append([kept] * prompt.num_kv_heads)
        return pad_keep_indices(rows, prompt.vision_mask.device)


@plphp.hookimpl
def plphp_selectors():
    return [Spaced]
'''


@pytest.fixture()
def plugin_dir(tmp_path):
    (tmp_path / "spaced_cli_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "policy.yaml").write_text(
        "preset: plphp\nallocator: {name: uniform, retention: 0.5}\nselector: {name: spaced_cli}\n"
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
        extra, env = ["--plugin", "spaced_cli_plugin"], None
    else:
        extra, env = [], {"PLPHP_PLUGINS": "spaced_cli_plugin"}
    demo = _plphp(
        ["demo", *extra, "--policy", "policy.yaml", "--max-new-tokens", "3", "--png", "kept.png"], plugin_dir, env
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "SharedTopK" not in demo.stdout and "Spaced" in demo.stdout
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
