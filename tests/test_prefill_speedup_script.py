"""benchmarks/prefill_speedup.py runs end to end on a small shape and writes its JSON (a smoke test:
figures are measured by running the script, never asserted in a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prefill_speedup.py"


def test_prefill_speedup_script_runs_and_reports(tmp_path):
    out = tmp_path / "speedup.json"
    args = ["--tokens", "300", "--layers", "3", "--vocab", "512", "--runs", "1", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--policies", "fastv", "vtw", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"plain", "fastv", "vtw"}
    assert data["setup"]["num_vision"] == 270
    assert data["results"]["vtw"]["vision_kv_removed"] > data["results"]["fastv"]["vision_kv_removed"] > 0


def test_prefill_speedup_script_refuses_a_decode_stage_preset():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--policies", "plphp"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2 and "'plphp' is not a prefill- or input-stage preset" in result.stderr


def test_prefill_speedup_script_runs_input_stage_presets_on_the_llava_shape(tmp_path):
    out = tmp_path / "input.json"
    args = ["--shape", "llava", "--layers", "1", "--vocab", "512", "--runs", "1", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--policies", "visionzip", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["setup"]["num_vision"] == 576
    assert abs(data["results"]["visionzip"]["vision_kv_removed"] - (1 - 64 / 576)) < 1e-6
