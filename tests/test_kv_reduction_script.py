"""benchmarks/kv_reduction.py runs end to end and writes its JSON (a smoke test: the figures come
from running the script, docs/benchmarks.md quotes them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "kv_reduction.py"


def test_kv_reduction_script_reads_the_reduction_from_the_report(tmp_path):
    out = tmp_path / "kv.json"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--policy",
            "plphp",
            "--policy",
            "fastv",
            "--new-tokens",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row["policy"].split(":")[0] for row in rows] == ["plphp", "fastv"]
    for row in rows:
        assert 0.0 < row["vision_kv_reduction"] < 1.0
        assert row["report"]["kv_bytes_after"] < row["report"]["kv_bytes_before"]
        assert len(row["report"]["layers"]) == 24
