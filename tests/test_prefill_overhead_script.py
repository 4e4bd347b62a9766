"""benchmarks/prefill_overhead.py runs end to end on a small shape and writes its JSON (a smoke test:
figures are measured by running the script, never asserted in a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "prefill_overhead.py"


def test_prefill_overhead_script_runs_and_times_the_session_parts(tmp_path):
    out = tmp_path / "overhead.json"
    args = ["--tokens", "300", "--layers", "3", "--vocab", "512", "--runs", "2", "--images", "2", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["setup"]["vision_tokens"] == 270 and data["setup"]["vision_token_id"] == 511
    assert set(data["seconds"]) == {"plain", "plphp", "full"} and all(len(v) == 2 for v in data["seconds"].values())
    assert data["exactness_max_abs_diff"] == {"plphp": 0.0, "full": 0.0}  # decode stage: prefill is exact
    for variant in ("plphp", "full"):
        for part in ("setup_s", "collect_s", "compress_s", "apply_s", "enter_exit_s"):
            assert data["parts"][f"{variant}.{part}"] > 0, (variant, part)
    assert set(data["comparisons"]) == {"plphp", "full"} and "direct_overhead_pct" in data
    assert "3 calls" in result.stdout  # one collector call per layer, seen through the session's events


def test_prefill_overhead_script_refuses_a_prompt_without_room_for_text():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tokens", "10", "--vision-fraction", "0.95", "--layers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1 and "leave too few text tokens" in result.stderr
