"""Figures of the GPU tests, written to `$PLPHP_GPU_OUT/cuda-tests.json` when that variable is set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="session")
def _gpu_figures():
    figures: dict[str, Any] = {}
    yield figures
    folder = os.environ.get("PLPHP_GPU_OUT")
    if folder and figures:
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        payload = {"device": device, "torch": torch.__version__, "figures": figures}
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "cuda-tests.json").write_text(json.dumps(payload, indent=2, default=str))


@pytest.fixture
def gpu_record(_gpu_figures):
    """`gpu_record(name, value)`: keep a measured figure for the JSON."""
    return _gpu_figures.__setitem__
