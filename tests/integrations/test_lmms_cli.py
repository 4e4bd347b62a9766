"""The real lmms-eval command line on the shipped grid model, offline: `python -m lmms_eval --model plphp
--tasks plphp_grid --include_path DIR` on 40 items exported by `plphp export-tasks`.

- Once with `full` and once with `plphp` (one process, batches of 4): the scores and every answer
  equal `plphp eval`'s on the same items, and the plphp summary's KV figures equal its records
  (which are the sessions' `PruningReport`s, `kv_bytes_per_sample`).
- Under `accelerate launch --num_processes 2` on CPU (gloo; `ACCELERATE_USE_CPU` makes accelerate's
  multi-process launcher build a CPU group): lmms-eval deals the items out to two ranks, and the
  results and the summary equal those of one process.

The runs are started once, side by side, and shared by the tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make test` (see the Makefile)")

from plphp.evaluation import EvalSettings, evaluate, load_jsonl  # noqa: E402
from plphp.evaluation.dataset import builtin_items  # noqa: E402
from plphp.evaluation.export import export_tasks  # noqa: E402
from plphp.models import load_grid_model  # noqa: E402

ITEMS = 40
TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(cache),
        "LMMS_EVAL_DATASETS_CACHE": str(cache),
    }


def _lmms_eval(task: Path, out: Path, policy: str, batch_size: int) -> list[str]:
    return [
        *("-m", "lmms_eval", "--model", "plphp", "--model_args", f"policy={policy}"),
        *("--tasks", "plphp_grid", "--include_path", str(task), "--batch_size", str(batch_size)),
        *("--output_path", str(out), "--log_samples"),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """lmms-eval with full and plphp in one process each, plphp in two processes: started together."""
    root = tmp_path_factory.mktemp("lmms")
    task = root / "task"
    export_tasks(builtin_items(ITEMS, seed=0), task)
    env = _environment(root / "hf-cache")
    accelerate = [*("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2")]
    commands = {
        "full": _lmms_eval(task, root / "full", "full", 4),
        "plphp": _lmms_eval(task, root / "plphp", "plphp", 1),
        "plphp-2": [
            *accelerate,
            "--main_process_port",
            str(_free_port()),
            *_lmms_eval(task, root / "plphp-2", "plphp", 1),
        ],
    }
    started = {
        name: subprocess.Popen(
            [sys.executable, *argv],
            cwd=root,
            env={**env, "ACCELERATE_USE_CPU": "true"} if name == "plphp-2" else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, argv in commands.items()
    }
    outputs = {name: process.communicate(timeout=TIMEOUT)[0] for name, process in started.items()}
    for name, process in started.items():
        assert process.returncode == 0, f"{name}:\n{outputs[name][-4000:]}"
    return {name: _read(root / name, outputs[name]) for name in commands} | {"task": task}


def _read(out: Path, output: str) -> dict:
    """lmms-eval's results and samples, and the plphp summary, of one run."""
    (results,) = out.glob("*_results.json")
    (samples,) = out.glob("*_samples_plphp_grid.jsonl")
    summaries = list(out.glob("*_plphp.json"))
    assert len(summaries) == 1, (
        f"one plphp summary beside the results in {out}: {sorted(out.iterdir())}\n{output[-3000:]}"
    )
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {
        "results": json.loads(results.read_text())["results"]["plphp_grid"],
        "answers": {row["doc_id"]: row["filtered_resps"] for row in rows},
        "summary": json.loads(summaries[0].read_text()),
        "output": output,
    }


@pytest.fixture(scope="module")
def reference(runs, tmp_path_factory):
    """`plphp eval` on the same items: full and plphp in batches of 4, plphp alone in batches of 1."""
    model, processor = load_grid_model()
    items = load_jsonl(runs["task"] / "test.jsonl")
    out = tmp_path_factory.mktemp("plphp-eval")
    batched = evaluate(model, processor, items, ["full", "plphp"], out / "b4", EvalSettings(4, 32, recall=False))
    single = evaluate(model, processor, items, ["plphp"], out / "b1", EvalSettings(1, 32, recall=False))
    records = {}
    for folder, policies in (("b4", ("full",)), ("b1", ("plphp",))):
        for line in (out / folder / "items.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["policy"] in policies:
                records.setdefault(record["policy"], {})[record["id"]] = record
    figures = {"full": batched["policies"]["full"], "plphp": single["policies"]["plphp"]}
    return {"records": records, "figures": figures, "ids": [item.id for item in items]}


@pytest.mark.parametrize("policy", ["full", "plphp"])
def test_lmms_eval_scores_equal_plphp_evals_exact_match(runs, reference, policy):
    run, records, ids = runs[policy], reference["records"][policy], reference["ids"]
    assert len(run["answers"]) == ITEMS
    assert {ids[doc]: answer for doc, answer in run["answers"].items()} == {
        i: r["prediction"] for i, r in records.items()
    }
    assert run["results"]["exact_match,none"] == pytest.approx(reference["figures"][policy]["exact_match"], abs=1e-12)
    assert run["results"]["token_accuracy,none"] == pytest.approx(
        reference["figures"][policy]["token_accuracy"], abs=1e-12
    )


@pytest.mark.parametrize("policy", ["full", "plphp"])
def test_the_plphp_summarys_kv_figures_equal_the_pruning_reports(runs, reference, policy):
    summary, records, ids = runs[policy]["summary"], reference["records"][policy], reference["ids"]
    assert summary["policy"] == policy and summary["processes"] == 1
    requests = {ids[r["doc_id"]]: r for r in summary["requests"]}
    assert sorted(requests) == sorted(records)
    for item_id, record in records.items():
        request = requests[item_id]
        assert (request["kv_bytes_before"], request["kv_bytes_after"]) == (
            record["kv_bytes_before"],
            record["kv_bytes_after"],
        )
        assert request["vision_kv_removed"] == pytest.approx(1 - record["vision_kv_kept"], abs=1e-12)
    task, figures = summary["tasks"]["plphp_grid"], reference["figures"][policy]
    assert task["requests"] == ITEMS
    assert task["kv_bytes_before"] == pytest.approx(figures["kv_bytes_before"])
    assert task["kv_bytes_after"] == pytest.approx(figures["kv_bytes_after"])
    assert task["kv_saved"] == pytest.approx(1 - figures["kv_retained"])
    assert task["decode_ms_per_token"] > 0
    if policy == "full":
        assert task["kv_saved"] == 0 and task["vision_kv_removed"] == 0
    else:
        assert task["vision_kv_removed"] > 0.3


def test_two_processes_under_accelerate_give_the_results_of_one(runs):
    one, two = runs["plphp"], runs["plphp-2"]
    assert two["summary"]["processes"] == 2
    assert two["answers"] == one["answers"]
    for metric in ("exact_match,none", "token_accuracy,none"):  # means of the same values, summed in another order
        assert two["results"][metric] == pytest.approx(one["results"][metric], abs=1e-12)

    def figures(summary):
        return [{k: v for k, v in r.items() if k != "decode_ms_per_token"} for r in summary["requests"]]

    assert figures(two["summary"]) == figures(one["summary"])
    for key in ("requests", "kv_bytes_before", "kv_bytes_after", "kv_saved", "vision_kv_removed"):
        assert two["summary"]["tasks"]["plphp_grid"][key] == one["summary"]["tasks"]["plphp_grid"][key]
