"""The models that ship with or are built by plphp, by name: the trained grid model or a random tiny one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from plphp.errors import ConfigError
from plphp.models.common import ARCHITECTURES
from plphp.models.grid import GRID_MODEL_DIR, load_grid_model
from plphp.models.grid_v2 import GRID_V2_MODEL_DIR, load_grid_v2_model
from plphp.models.processors import build_tiny_processor
from plphp.models.tiny import build_tiny_model

#: The trained model's name.
GRID = "grid"
#: The second trained model: patch-local vision tokens, 16 decoder layers (`plphp.models.grid_v2`).
GRID_V2 = "grid-v2"
BUILTIN_MODELS: tuple[str, ...] = (GRID, GRID_V2, *ARCHITECTURES)


def load_builtin_model(name: str = GRID) -> tuple[Any, Any, str]:
    """A built-in model, its processor and a one-line description.

    Args:
        name: "grid" (the trained grid model, `plphp.models.grid`), "grid-v2" (its patch-local
            successor, `plphp.models.grid_v2`) or a tiny random-weight
            architecture of `ARCHITECTURES` (12 decoder layers, so that the default start layer
            leaves a representative share unpruned).

    Raises:
        ConfigError: for an unknown name, listing the allowed ones.
    """
    if name == GRID:
        model, processor = load_grid_model()
        return model, processor, "the grid model (a tiny LLaVA trained on plphp's grid tasks, shipped with plphp)"
    if name == GRID_V2:
        model, processor = load_grid_v2_model()
        return model, processor, "the grid model v2 (a tiny LLaVA with patch-local vision tokens, shipped with plphp)"
    if name not in ARCHITECTURES:
        raise ConfigError(f"arch: {name!r} is not a built-in model; use one of {', '.join(BUILTIN_MODELS)}")
    model = build_tiny_model(name, seed=0, num_layers=12)
    return model, build_tiny_processor(name), f"a tiny {name} model (random weights: its answers mean nothing)"


def task_layout(model: str | os.PathLike) -> str:
    """The picture layout (`plphp.tasks.LAYOUTS`) a built-in model name or model directory was trained on.

    The `layout` setting its training script recorded in `training.json` beside the weights;
    `cell` (shapes filling their cells) when there is none: tiny models, hub ids, other checkpoints.
    """
    directory = {GRID: GRID_MODEL_DIR, GRID_V2: GRID_V2_MODEL_DIR}.get(str(model), Path(model))
    try:
        settings = json.loads((Path(directory) / "training.json").read_text()).get("settings", {})
    except (OSError, ValueError, AttributeError):
        return "cell"
    return str(settings.get("layout", "cell"))
