"""benchmarks/decode_attention.py runs end to end and writes its JSON and Markdown (a smoke test: the
figures come from running the script, docs/benchmarks.md quotes them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_attention.py"


def test_the_kernels_are_timed_against_the_read_floor(tmp_path):
    out, page = tmp_path / "k.json", tmp_path / "k.md"
    args = [sys.executable, str(SCRIPT), "--batch", "1,2", "--vision-tokens", "64", "--rounds", "1", "--threads", "1"]
    done = subprocess.run(
        [*args, "--json", str(out), "--markdown", str(page)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert [result["batch"] for result in payload["results"]] == [1, 2]
    for result in payload["results"]:
        kernels = result["kernels"]
        torch_kernels = {"grouped, torch products (plphp)", "sdpa (enable_gqa)", "read K and V (sum)"}
        native = payload["environment"]["native_decode_kernel"]
        assert set(kernels) == torch_kernels | ({"native (plphp)"} if native["available"] else set())
        assert result["native_kernel"]["available"] == native["available"]
        assert kernels["read K and V (sum)"]["of_read_floor"] == 1.0
        assert all(k["read_GBps"] > 0 and k["bandwidth_share"] > 0 for k in kernels.values())
        assert result["kv_bytes_per_call"] == 2 * result["batch"] * 2 * (64 + 64) * 64 * 4  # K and V, float32
        assert set(result["score_product_GFLOPs_by_rows"]) == {"1", "7", "16", "64"}
    assert (
        "| 2 | grouped, torch products (plphp) |" in page.read_text()
        and payload["environment"]["torch_num_threads"] == 1
    )


def test_the_mlp_products_can_run_between_the_layers_calls(tmp_path):
    out = tmp_path / "k.json"
    args = [sys.executable, str(SCRIPT), "--batch", "1", "--vision-tokens", "32", "--rounds", "1", "--threads", "1"]
    done = subprocess.run([*args, "--mlp-between", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["mlp_between_layers"] is True
    assert all(k["seconds_per_call"]["median"] > 0 for k in result["kernels"].values())
