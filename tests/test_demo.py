"""The demo: the trained grid model by default, and the tiny random architectures (square and strip
layouts of the kept-patches picture)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from plphp.demo import run_demo
from plphp.errors import ConfigError


def test_demo_answers_with_the_trained_grid_model_by_default(tmp_path):
    out = io.StringIO()
    run_demo(Console(file=out, width=200), png=tmp_path / "kept.png")
    text = out.getvalue()
    assert "the grid model" in text and "random weights" not in text
    assert text.count("reference:") == 5  # one question of each kind
    assert "exact match: unpruned" in text and "right" in text
    assert (tmp_path / "kept.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_rejects_an_unknown_model_naming_the_choices():
    with pytest.raises(ConfigError, match="'gird' is not a built-in model; use one of grid, grid-v2, llava"):
        run_demo(Console(file=io.StringIO()), arch="gird", png=None)


@pytest.mark.parametrize("arch", ["llava", "llava_onevision"])
def test_demo_runs_and_writes_the_picture(tmp_path, arch):
    out = io.StringIO()
    run_demo(Console(file=out, width=200), arch=arch, max_new_tokens=3, png=tmp_path / "kept.png", layer=2)
    text = out.getvalue()
    assert "reference:" in text and "attention recall" in text and "layer 2 kept" in text
    assert (tmp_path / "kept.png").read_bytes()[:4] == b"\x89PNG"


def test_the_demo_draws_the_picture_of_plphp_inspect():
    """One picture function for both commands (its geometry is tested in tests/inspect)."""
    import plphp.demo
    import plphp.inspect.patches

    assert plphp.demo.kept_patches_figure is plphp.inspect.patches.kept_patches_figure
