"""The real lmms-eval command line on the shipped grid model, offline: the first example of
docs/tutorials/lmms-eval.md, as written (`plphp export-tasks` of 40 items, then `python -m lmms_eval
--model plphp --tasks plphp_grid --include_path ...` once with `full` and once with `plphp`).

- The scores and every answer equal `plphp eval`'s on the same items (batches of 4 both), and the
  plphp summary's KV figures equal its records, which are the sessions' `PruningReport`s
  (`kv_bytes_per_sample`).
- Under `accelerate launch --num_processes 2` on CPU (gloo; `ACCELERATE_USE_CPU` makes accelerate's
  multi-process launcher build a CPU group) lmms-eval deals the items out to two ranks; the answers,
  scores and summary equal one process's (`plphp eval` in this process, batches of 1 both, so that
  every item is computed alike whichever rank gets it).
- The multiple-choice task `plphp_grid_choice` (`--force_simple`): every option's loss, as lmms-eval
  records it, equals the masked reference's (the dropped keys masked to -inf), and so does the
  accuracy.

The runs are started once, side by side, and shared by the tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make test` (see the Makefile)")

from plphp.backends.inputs import chat_inputs  # noqa: E402
from plphp.evaluation import EvalSettings, evaluate, load_jsonl  # noqa: E402
from plphp.evaluation.dataset import IMAGE_MARKER  # noqa: E402
from plphp.integrations.likelihood import continuation_logprobs  # noqa: E402
from plphp.models import load_grid_model  # noqa: E402

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "lmms-eval.md"
ITEMS = 40
TIMEOUT = 600


def _tutorial_commands() -> list[list[str]]:
    """The `$` lines of the tutorial's first console block; `plphp` and `python` are this interpreter."""
    block = re.search(r"```console\n(.*?)```", TUTORIAL.read_text(), re.S).group(1)
    commands = []
    for line in block.splitlines():
        program, *args = shlex.split(line.removeprefix("$ "))
        commands.append([sys.executable, *(["-m", "plphp"] if program == "plphp" else []), *args])
    return commands


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tutorial's export; then its two lmms-eval runs and plphp on two processes, side by side."""
    root = tmp_path_factory.mktemp("lmms")
    export, *lmms = _tutorial_commands()
    assert _option(export, "--num-items") == str(ITEMS)
    env = _environment(root / "hf-cache")
    exported = subprocess.run(export, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    commands = {_option(argv, "--model_args").removeprefix("policy="): argv for argv in lmms}
    assert sorted(commands) == ["full", "plphp"]
    two = list(commands["plphp"])
    two[two.index("--batch_size") + 1] = "1"
    two[two.index("--output_path") + 1] = "logs/plphp-2"
    accelerate = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    commands["plphp-2"] = [two[0], *accelerate, "--main_process_port", str(_free_port()), *two[1:]]
    choice = list(commands["plphp"])
    choice[choice.index("--tasks") + 1] = "plphp_grid_choice"
    choice[choice.index("--output_path") + 1] = "logs/choice"
    commands["choice"] = [*choice, "--force_simple"]
    started = {
        name: subprocess.Popen(
            argv,
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
        assert process.returncode == 0 and "Error during evaluation" not in outputs[name], outputs[name][-4000:]
    out = {
        name: _read(root / _option(argv, "--output_path"), outputs[name], _option(argv, "--tasks"))
        for name, argv in commands.items()
    }
    return out | {"task": root / _option(commands["full"], "--include_path")}


def _read(out: Path, output: str, task: str) -> dict:
    """lmms-eval's results and samples, and the plphp summary, of one run."""
    (results,) = out.glob("*_results.json")
    (samples,) = out.glob(f"*_samples_{task}.jsonl")
    summaries = list(out.glob("*_plphp.json"))
    assert len(summaries) == 1, f"one plphp summary beside the results: {sorted(out.iterdir())}\n{output[-3000:]}"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {
        "results": json.loads(results.read_text())["results"][task],
        "answers": {row["doc_id"]: row["filtered_resps"] for row in rows},
        "summary": json.loads(summaries[0].read_text()),
    }


@pytest.fixture(scope="module")
def reference(runs, tmp_path_factory):
    """`plphp eval` on the same items in this process: full and plphp in batches of 4 (as the
    tutorial's runs), plphp in batches of 1 (as the two-process run)."""
    model, processor = load_grid_model()
    items = load_jsonl(runs["task"] / "test.jsonl")
    out = tmp_path_factory.mktemp("plphp-eval")
    figures, records = {}, {}
    for name, policies, batch_size in (("b4", ["full", "plphp"], 4), ("b1", ["plphp"], 1)):
        results = evaluate(model, processor, items, policies, out / name, EvalSettings(batch_size, 32, recall=False))
        for line in (out / name / "items.jsonl").read_text().splitlines():
            record = json.loads(line)
            records.setdefault(f"{record['policy']}/{name}", {})[record["id"]] = record
        figures |= {f"{policy}/{name}": results["policies"][policy] for policy in policies}
    return {"records": records, "figures": figures, "ids": [item.id for item in items]}


def _check_answers_and_scores(run, reference, key):
    records, ids, figures = reference["records"][key], reference["ids"], reference["figures"][key]
    assert len(run["answers"]) == ITEMS
    assert {ids[doc]: answer for doc, answer in run["answers"].items()} == {
        i: r["prediction"] for i, r in records.items()
    }
    assert run["results"]["exact_match,none"] == pytest.approx(figures["exact_match"], abs=1e-12)
    assert run["results"]["token_accuracy,none"] == pytest.approx(figures["token_accuracy"], abs=1e-12)


def _check_kv_figures(summary, reference, key):
    records, ids, figures = reference["records"][key], reference["ids"], reference["figures"][key]
    requests = {ids[r["doc_id"]]: r for r in summary["requests"]}
    assert sorted(requests) == sorted(records)
    for item_id, record in records.items():
        request = requests[item_id]
        assert (request["kv_bytes_before"], request["kv_bytes_after"]) == (
            record["kv_bytes_before"],
            record["kv_bytes_after"],
        )
        assert request["vision_kv_removed"] == pytest.approx(1 - record["vision_kv_kept"], abs=1e-12)
    task = summary["tasks"]["plphp_grid"]
    assert task["requests"] == ITEMS and task["decode_ms_per_token"] > 0
    assert task["kv_bytes_before"] == pytest.approx(figures["kv_bytes_before"])
    assert task["kv_bytes_after"] == pytest.approx(figures["kv_bytes_after"])
    assert task["kv_saved"] == pytest.approx(1 - figures["kv_retained"])
    return task


@pytest.mark.parametrize("policy", ["full", "plphp"])
def test_lmms_eval_scores_equal_plphp_evals_exact_match(runs, reference, policy):
    _check_answers_and_scores(runs[policy], reference, f"{policy}/b4")


@pytest.mark.parametrize("policy", ["full", "plphp"])
def test_the_plphp_summarys_kv_figures_equal_the_pruning_reports(runs, reference, policy):
    summary = runs[policy]["summary"]
    assert summary["policy"] == policy and summary["processes"] == 1 and summary["batch_size"] == 4
    task = _check_kv_figures(summary, reference, f"{policy}/b4")
    if policy == "full":
        assert task["kv_saved"] == 0 and task["vision_kv_removed"] == 0
    else:
        assert task["kv_saved"] > 0.2 and task["vision_kv_removed"] > 0.3


def test_two_processes_under_accelerate_give_the_results_of_one(runs, reference):
    two = runs["plphp-2"]
    assert two["summary"]["processes"] == 2 and two["summary"]["batch_size"] == 1
    _check_answers_and_scores(two, reference, "plphp/b1")
    _check_kv_figures(two["summary"], reference, "plphp/b1")
    doc_ids = [r["doc_id"] for r in two["summary"]["requests"]]
    assert doc_ids == sorted(doc_ids) and len(set(doc_ids)) == ITEMS, "each request once, in order"


def test_a_multiple_choice_task_scores_every_option_as_the_masked_reference(runs):
    """Each option's loss (the mean negative log-likelihood of its tokens after the question, on the
    cache the policy pruned) equals the one computed with the dropped keys masked instead."""
    run = runs["choice"]
    model, processor = load_grid_model(attn_implementation="eager")
    tokenizer = processor.tokenizer
    rows = [json.loads(line) for line in (runs["task"] / "test.jsonl").read_text().splitlines()]
    items = load_jsonl(runs["task"] / "test.jsonl")
    right = []
    for doc_id, (row, item) in enumerate(zip(rows, items, strict=True)):
        prompt = (row["question"], item.images())
        inputs = chat_inputs(processor, [prompt] * len(row["choices"]), image_marker=IMAGE_MARKER)
        tokens = [tokenizer(" " + choice, add_special_tokens=False)["input_ids"] for choice in row["choices"]]
        masked = continuation_logprobs(model, inputs, tokens, "plphp", materialize="mask")
        losses = [-sum(values) / len(values) for values in masked.token_logprobs]
        recorded = [float(loss) for loss, _ in run["answers"][doc_id]]
        assert max(abs(a - b) for a, b in zip(recorded, losses, strict=True)) <= 1e-5, row["id"]
        right.append(min(range(len(losses)), key=losses.__getitem__) == row["choices"].index(row["answer"]))
    assert run["results"]["acc,none"] == pytest.approx(sum(right) / len(right), abs=1e-12)
    assert run["results"]["acc,none"] > 0.5, "the grid model picks most answers"
    assert run["summary"]["tasks"]["plphp_grid_choice"]["vision_kv_removed"] > 0.3
