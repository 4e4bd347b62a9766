"""training/train_grid_v2.py: a few steps end to end, twice (a smoke test; the real run ships its
weights and is never run in CI). Two runs with one seed give the same weights, bit for bit. The
runs take every path of the decoder stage: a `compare`-only curriculum step on two pictures (with
the ordinal scaffold, colour-count follow-ups and a prefixed answer), then a multi-image and a
single-image step of the mix, on pictures of the `quadrant` layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "train_grid_v2.py"
ARGS = ["--threads", "1", "--vision-steps", "2", "--decoder-steps", "3", "--batch", "4", "--log-every", "1"]
ARGS += ["--warmup", "1", "--eval-items", "5", "--eval-batch", "5", "--turns", "2"]
ARGS += ["--compare-only-steps", "1", "--compare-only-images", "2", "--compare-scaffold", "1"]
ARGS += ["--compare-only-counts", "0.5", "--compare-answer-prefix", "images", "--layout", "quadrant"]
ARGS += ["--label-loss", "0.3", "--answer-preview", "1", "--preview-layer", "10"]  # the shipped recipe


def _train(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *ARGS],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_v2_training_is_deterministic_and_writes_a_loadable_model(tmp_path):
    runs = [_train(tmp_path / name) for name in ("a", "b")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    first, second = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert first.keys() == second.keys()
    assert all(first[key].equal(second[key]) for key in first)
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["held_out"]["items"] == 5
    assert [set(row["teacher_forced_exact"]) <= {"compare"} for row in record["history"]] == [True, True, False]
    assert set(record["vision"]["patch_accuracy"]) == {"row", "column", "colour", "shape_part"}
    from plphp.models.builtin import task_layout

    assert task_layout(tmp_path / "a") == "quadrant"  # what `plphp eval --layout auto` draws for it

    from plphp.models.grid_v2 import build_grid_v2_processor, load_grid_v2_model

    model, processor = load_grid_v2_model(tmp_path / "a")
    assert model.config.text_config.num_hidden_layers == 16
    assert processor.chat_template == build_grid_v2_processor().chat_template


def test_v2_training_refuses_a_compare_curriculum_beyond_the_ordinals(tmp_path):
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--compare-only-images", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "--compare-only-images: 5 is not allowed; use 2 to 4" in run.stderr
