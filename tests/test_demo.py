"""The demo on the other tiny architectures: square and strip layouts of the kept-patches picture."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from plphp.demo import _token_grid, run_demo


@pytest.mark.parametrize("arch", ["llava", "llava_onevision"])
def test_demo_runs_and_writes_the_picture(tmp_path, arch):
    out = io.StringIO()
    run_demo(Console(file=out, width=200), arch=arch, max_new_tokens=3, png=tmp_path / "kept.png", layer=2)
    text = out.getvalue()
    assert "reference:" in text and "attention recall" in text and "layer 2 kept" in text
    assert (tmp_path / "kept.png").read_bytes()[:4] == b"\x89PNG"


def test_token_grid_layouts():
    import torch

    assert _token_grid(36, torch.tensor([1, 12, 12]), 2) == (6, 6)
    assert _token_grid(36, None, 1) == (6, 6)
    assert _token_grid(17, None, 1) == (1, 17)
