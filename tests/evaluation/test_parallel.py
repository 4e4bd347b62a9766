"""`plphp eval` in several processes: the batches are dealt out by rank, each rank writes its own records,
rank 0 merges them; the merged summary equals a single-process run, and a folder left by an earlier
run (merged records and a rank's file) is resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from plphp.errors import ConfigError
from plphp.evaluation import EvalSettings, builtin_items, evaluate
from plphp.evaluation.parallel import RECORDS, Shard, merge_records, read_all_records
from plphp.models import load_grid_model

ITEMS = 24
POLICIES = ["full", "plphp"]


def test_the_shard_comes_from_the_launchers_environment():
    assert Shard.from_environment({}) == Shard(0, 1, 0)
    shard = Shard.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (shard.rank, shard.world_size, shard.local_rank, shard.is_main) == (3, 4, 1, False)
    assert list(shard.mine(list(range(10)))) == [3, 7]
    assert shard.records_name == "items.rank3.jsonl" and Shard().records_name == RECORDS
    for env in ({"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "two"}):
        with pytest.raises(ConfigError) as caught:
            Shard.from_environment(env)
        assert "\n" not in str(caught.value)


def test_merging_keeps_each_record_once_and_removes_the_rank_files(tmp_path):
    rows = {
        RECORDS: [{"policy": "full", "id": "a"}],
        "items.rank0.jsonl": [{"policy": "full", "id": "b"}, {"policy": "full", "id": "a"}],
        "items.rank1.jsonl": [{"policy": "plphp", "id": "a"}],
    }
    for name, records in rows.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records) + '{"policy": "cut')
    merge_records(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORDS]
    assert [(r["policy"], r["id"]) for r in read_all_records(tmp_path)] == [
        ("full", "a"),
        ("full", "b"),
        ("plphp", "a"),
    ]


def _without_timing(figures):
    return {name: {k: v for k, v in row.items() if k != "decode_ms_per_token"} for name, row in figures.items()}


def test_two_processes_under_torchrun_merge_to_the_single_process_summary_and_resume(tmp_path):
    model, processor = load_grid_model()
    items = builtin_items(ITEMS, seed=0)
    settings = EvalSettings(batch_size=4, max_new_tokens=32, recall=False)
    single = evaluate(model, processor, items, POLICIES, tmp_path / "one", settings)
    records = [json.loads(line) for line in (tmp_path / "one" / RECORDS).read_text().splitlines()]
    # An earlier run left 10 items merged and 6 more in rank 1's file: they are not run again.
    out = tmp_path / "two"
    out.mkdir()
    done = {item.id for item in items[:10]}, {item.id for item in items[10:16]}
    for name, ids in zip((RECORDS, "items.rank1.jsonl"), done):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in records if r["id"] in ids))
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *("-m", "plphp", "eval", "--num-items", str(ITEMS), "--no-recall", "--batch-size", "4", "--out", str(out)),
        *(arg for policy in POLICIES for arg in ("-p", policy)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    done_run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done_run.returncode == 0, done_run.stdout[-3000:] + done_run.stderr[-3000:]
    assert f"resuming: 32 of {2 * ITEMS} done" in done_run.stdout
    assert sorted(p.name for p in out.glob("items*.jsonl")) == [RECORDS], "rank 0 merged the ranks' records"
    merged = json.loads((out / "results.json").read_text())
    assert merged["settings"]["processes"] == 2
    assert _without_timing(merged["policies"]) == _without_timing(single["policies"])
    assert len(read_all_records(out)) == 2 * ITEMS
