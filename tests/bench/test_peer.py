"""The kvpress peer comparison (`plphp.bench.peer`, `benchmarks/peers/kvpress.py`).

The script runs end to end with the real worker under this interpreter and a stand-in `kvpress`
package (tests/bench/fake_kvpress), so it needs no peer virtualenv; the test with the real kvpress
skips unless `make peer-kvpress` has built `.peer/kvpress-venv`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from plphp.bench.peer import (
    PAIRS,
    KvpressWorker,
    PeerSetup,
    PeerWorkerError,
    matched_retention,
    run_peer_comparison,
)
from plphp.bench.peer_summary import summarize
from plphp.bench.workload import Workload
from plphp.errors import ConfigError
from plphp.ops import kept_count

ROOT = Path(__file__).resolve().parents[2]
FAKE_KVPRESS = Path(__file__).with_name("fake_kvpress")
PEER_PYTHON = ROOT / ".peer" / "kvpress-venv" / "bin" / "python"
TINY_QWEN2 = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


def _script():
    spec = importlib.util.spec_from_file_location("peer_kvpress_script", ROOT / "benchmarks" / "peers" / "kvpress.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("vision, text, compression", [(1936, 64, 0.7), (300, 64, 0.7), (500, 10, 0.5), (97, 3, 0.9)])
def test_matched_retention_keeps_as_many_entries_per_head_as_kvpress(vision, text, compression):
    workload = Workload(vision_tokens=vision, text_tokens=text)
    retention, kept = matched_retention(workload, compression)
    assert kept == max(1, int(workload.prompt_length * (1 - compression)))  # kvpress's compute_n_kept
    assert text + kept_count(retention, vision) == kept
    import torch  # the allocators hand retention over as float32

    assert text + kept_count(float(torch.tensor(retention, dtype=torch.float32)), vision) == kept


def test_a_compression_that_would_drop_text_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="fewer than the 64 text tokens"):
        matched_retention(Workload(vision_tokens=100, text_tokens=64), 0.9)
    with pytest.raises(ConfigError, match="compression: 1.0"):
        PeerSetup(workload=Workload(), compression=1.0)


def test_a_missing_or_dying_worker_is_a_one_line_error(tmp_path):
    with pytest.raises(PeerWorkerError, match="make peer-kvpress"):
        KvpressWorker.start(tmp_path / "no-python")
    dying = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr)"]
    with KvpressWorker(dying) as worker, pytest.raises(PeerWorkerError, match="exited during 'build': boom"):
        worker.request("build", config={})


def test_the_script_compares_against_a_stand_in_kvpress_in_one_interleaved_session(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(FAKE_KVPRESS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the script sets it for its worker; this restores it
    out_json, out_md = tmp_path / "peer.json", tmp_path / "peer.md"
    argv = ["--peer-python", sys.executable, "--layers", "1", "--batch", "2", "--vision-tokens", "120"]
    argv += ["--text-tokens", "8", "--new-tokens", "2", "--rounds", "1", "--json", str(out_json)]
    assert _script().main([*argv, "--markdown", str(out_md)]) == 0
    result = json.loads(out_json.read_text())
    rows = {row["label"]: row for row in result["summary"]["rows"]}
    assert list(rows) == [pair.label for pair in PAIRS]
    kept = result["setup"]["kept_per_head"]
    assert kept == int(128 * 0.3)
    for label in ("snapkv", "knorm"):  # both hold exactly the matched count
        assert rows[label]["kv_ratio"] == 1.0
        assert rows[label]["plphp"]["entries_per_head_held"] == rows[label]["kvpress"]["entries_per_head_held"] == kept
    adakv = rows["adakv"]
    assert adakv["kvpress"]["kv_vs_unpruned"] == 1.0  # it masks: everything is still held
    assert adakv["kvpress"]["entries_per_head_attended"] == pytest.approx(kept)
    assert adakv["plphp"]["entries_per_head_attended"] == pytest.approx(kept)
    assert adakv["kv_ratio"] < 1.0 and result["summary"]["targets"]["adakv_kv_ratio"] == adakv["kv_ratio"]
    # every round ran every pair, with both sides' steps timed, and the order alternated
    assert len(result["rounds"]) == len(PAIRS)
    assert {r["first"] for r in result["rounds"]} == {"plphp", "kvpress"}
    assert all(len(r["plphp"]["steps_s"]) == len(r["kvpress"]["steps_s"]) == 2 for r in result["rounds"])
    assert (
        result["setup"]["environment"]["torch_num_threads"] == 1 and result["setup"]["peer"]["torch_num_threads"] == 1
    )
    markdown = out_md.read_text()
    assert "| adakv |" in markdown and "Target (AdaKV)" in markdown and "load average" in markdown


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no peer virtualenv: build it with `make peer-kvpress`")
def test_real_kvpress_holds_what_plphp_reads_from_its_cache():
    workload = Workload(batch=2, vision_tokens=120, text_tokens=8, new_tokens=2)
    setup = PeerSetup(workload=workload, rounds=1, warmup_tokens=1, model_config=TINY_QWEN2)
    with KvpressWorker.start(PEER_PYTHON, threads=1) as worker:
        raw = run_peer_comparison(setup, worker)
    assert raw["peer"]["versions"]["kvpress"] == "0.5.5"
    rows = {row["label"]: row for row in summarize(raw, workload, TINY_QWEN2)["rows"]}
    kept = raw["kept_per_head"]
    assert (
        rows["snapkv"]["kvpress"]["entries_per_head_held"] == rows["snapkv"]["plphp"]["entries_per_head_held"] == kept
    )
    assert rows["adakv"]["kvpress"]["kv_vs_unpruned"] == 1.0
    assert rows["adakv"]["kvpress"]["entries_per_head_attended"] == pytest.approx(kept)
    assert rows["adakv"]["kv_ratio"] < 1.0
