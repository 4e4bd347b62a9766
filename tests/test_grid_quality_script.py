"""benchmarks/grid_quality.py end to end on a few items (a smoke test: the figures come from running
the script, docs/benchmarks.md quotes them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "grid_quality.py"


def test_grid_quality_script_writes_the_table_and_json(tmp_path):
    out = tmp_path / "quality.json"
    args = ["--items", "5", "--batch-size", "5", "--no-recall", "--out", str(tmp_path / "eval")]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(out), "--markdown", str(tmp_path / "quality.md")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"full", "plphp r=0.3", "fastv r=0.15", "random-tiers r=0.5"} <= set(data["policies"])
    assert data["policies"]["plphp r=0.3"]["kv_bytes_after"] == data["policies"]["random-tiers r=0.3"]["kv_bytes_after"]
    table = (tmp_path / "quality.md").read_text()
    assert "| policy | vision KV kept |" in table and "benchmarks/grid_quality.py" in table
