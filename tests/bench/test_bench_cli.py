"""`plphp bench` run the way a user runs it, on a tiny model: the table, JSON, Markdown and PNG."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from plphp.cli import app
from tests.test_cli import plphp_cli


def test_bench_writes_json_markdown_and_a_png_with_a_sweep(tmp_path):
    paths = {kind: tmp_path / f"bench.{kind}" for kind in ("json", "md", "png")}
    result = plphp_cli(
        "bench",
        "--model", "tiny-llava-onevision",
        "--batch", "2", "--vision-tokens", "40", "--text-tokens", "8", "--new-tokens", "3",
        "--rounds", "1", "--warmup-tokens", "1", "--threads", "1", "--bandwidth-mb", "8",
        "--policy", "plphp", "--policy", "full", "--sweep", "retention=0.5,1.0",
        "--json", str(paths["json"]), "--markdown", str(paths["md"]), "--plot", str(paths["png"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "decode-only figures: the prefill is synthetic" in out
    assert "threads: torch 1" in out and "bandwidth: read" in out and "load:" in out
    data = json.loads(paths["json"].read_text())
    labels = [row["label"] for row in data["rows"]]
    assert labels == ["unpruned", "full-fast", "plphp", "full", "retention=0.5", "retention=1"]
    rows = {row["label"]: row for row in data["rows"]}
    assert rows["retention=0.5"]["kv_bytes"] < rows["retention=1"]["kv_bytes"] == rows["unpruned"]["kv_bytes"]
    assert all(rows[label]["kv_bytes_match_formula"] for label in labels[1:])
    assert data["setup"]["environment"]["torch_num_threads"] == 1
    assert data["setup"]["prefill"] == "synthetic" and len(data["runs"]) == 6
    # the kernel baseline: speedups against it measure pruning at equal kernels
    assert "speedup_vs_full_fast" not in rows["full-fast"] and "speedup_vs_full_fast" not in rows["unpruned"]
    for label in ("plphp", "full", "retention=0.5"):
        assert rows[label]["speedup_vs_full_fast"] > 0 and rows[label]["ideal_speedup_vs_full_fast"] >= 1.0
    # attention timed per layer group through the session's events, as a share of the read bandwidth
    assert "attention_s_per_step" not in rows["unpruned"]  # no session, no events
    assert rows["retention=0.5"]["attention_bandwidth_share_pruned"] > 0
    assert rows["full-fast"]["attention_bandwidth_share_other"] > 0
    assert "attention_bandwidth_share_pruned" not in rows["full-fast"]
    assert "full-fast: attention" in " ".join(out.split()) and "of ideal" in " ".join(out.split())
    markdown = paths["md"].read_text()
    assert "| policy | decode ms/step |" in markdown and "synthetic" in markdown and "vs full-fast" in markdown
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sweep", "retention=0:2:1"), "retention 2.0 is outside the allowed range"),
        (("--sweep", "retention=0.1:x:0.1"), "STOP 'x' is not a number"),
        (("--prefill", "fake"), "--prefill: 'fake' is not allowed; use 'synthetic' or 'real'"),
        (("--dtype", "int8"), "--dtype: 'int8' is not allowed; use one of float32, float16, bfloat16"),
        (("--batch", "0"), "batch: 0 is not allowed"),
        (("--predict-gbps", "100", "--sequences", "1,x"), "--sequences: '1,x' is not a comma-separated list"),
        (("--predict-gbps", "100", "--model", "gpt"), "model: 'gpt' is not a named shape; allowed:"),
    ],
)
def test_bench_rejects_bad_options_in_one_line(args, message):
    # In process: these fail before any model is built.
    result = CliRunner().invoke(app, ["bench", *args], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bench_predicts_a_7b_decode_step_from_the_bandwidth_model():
    result = plphp_cli(
        "bench", "--model", "llava-onevision-qwen2-7b", "--dtype", "bfloat16", "--predict-gbps", "2000",
        "--sequences", "1,8,32", "--kept", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bandwidth model: llava-onevision-qwen2-7b" in result.stdout
    for sequences in ("1", "8", "32"):
        assert f"│ {sequences:>9} │" in result.stdout
