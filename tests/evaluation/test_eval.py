"""`plphp eval`: several policies side by side, resumable output, clear errors on bad rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plphp
from plphp import models
from plphp.errors import ConfigError
from plphp.evaluation import (
    DatasetError,
    EvalSettings,
    builtin_items,
    default_policies,
    evaluate,
    load_jsonl,
)
from plphp.evaluation.runner import RECORDS, read_records
from plphp.policy import Preset
from plphp.tasks import make_tasks

SETTINGS = EvalSettings(batch_size=3, max_new_tokens=12)


@pytest.fixture(scope="module")
def model_and_processor():
    return models.build_tiny_model("qwen2_vl", seed=0, num_layers=4), models.build_tiny_processor("qwen2_vl")


def _evaluate(model_and_processor, items, out, **kwargs):
    model, processor = model_and_processor
    kwargs.setdefault("settings", SETTINGS)
    kwargs.setdefault("run_info", {"model": "tiny qwen2_vl"})
    return evaluate(model, processor, items, out_dir=out, **kwargs)


def test_policies_side_by_side_with_json_plot_and_records(model_and_processor, tmp_path):
    items = builtin_items(6, seed=1)
    results = _evaluate(model_and_processor, items, tmp_path, policies=["full", "plphp", "random"])
    summary = results["policies"]
    assert list(summary) == ["full", "plphp", "random"]
    assert json.loads((tmp_path / "results.json").read_text())["policies"] == summary
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_records(tmp_path / RECORDS)) == 18
    full, pruned = summary["full"], summary["plphp"]
    assert full["recall"] == 1.0 and full["kv_retained"] == 1.0 and full["same_as_full"] == 1.0
    assert all(value == 1.0 for value in full["recall_per_layer"])
    for row in summary.values():
        assert row["items"] == 6
        assert 0.0 <= row["exact_match"] <= 1.0 and 0.0 <= row["token_accuracy"] <= 1.0
        assert 0.0 <= row["recall"] <= 1.0 and row["decode_ms_per_token"] > 0
        assert {"single-image", "multi-image", "locate", "compare"} <= set(row["by_kind"])
    assert pruned["kv_bytes_after"] < pruned["kv_bytes_before"] == full["kv_bytes_before"]
    assert pruned["vision_kv_kept"] < 0.8 and pruned["recall"] < 1.0
    assert pruned["recall_per_layer"][:2] == [1.0, 1.0]  # start_layer 2: the first layers are whole


def test_the_full_policy_answers_as_plain_generate(model_and_processor, tmp_path):
    model, processor = model_and_processor
    items = builtin_items(3, seed=2)
    _evaluate(model_and_processor, items, tmp_path, policies=["full"])
    records = {r["id"]: r["prediction"] for r in read_records(tmp_path / RECORDS)}
    from plphp.evaluation.runner import build_inputs

    inputs = build_inputs(processor, items, "cpu")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    for item, answer in zip(items, answers):
        assert answer.strip().startswith(records[item.id])


def test_a_rerun_resumes_and_keeps_what_was_scored(model_and_processor, tmp_path):
    items = builtin_items(6, seed=3)
    _evaluate(model_and_processor, items, tmp_path, policies=["full", "plphp"])
    path = tmp_path / RECORDS
    lines = path.read_text().splitlines()
    kept = [json.loads(line) for line in lines[:4]]
    kept[0]["prediction"] = "marker of a kept record"
    # A crash: only the first batch's first records and half a line made it to disk.
    path.write_text("".join(json.dumps(r) + "\n" for r in kept) + lines[4][:20])
    results = _evaluate(model_and_processor, items, tmp_path, policies=["full", "plphp"])
    records = read_records(path)
    assert len(records) == 12 and len({(r["policy"], r["id"]) for r in records}) == 12
    assert records[0]["prediction"] == "marker of a kept record"
    assert results["policies"]["plphp"]["items"] == 6
    # A policy added later runs on every item; the others are not run again.
    _evaluate(model_and_processor, items, tmp_path, policies=["full", "plphp", "random"])
    assert len(read_records(path)) == 18


def test_a_folder_of_another_run_is_refused(model_and_processor, tmp_path):
    items = builtin_items(2, seed=4)
    _evaluate(model_and_processor, items, tmp_path, policies=["full"])
    with pytest.raises(ConfigError, match="another run.*model"):
        _evaluate(model_and_processor, items, tmp_path, policies=["full"], run_info={"model": "another"})
    _evaluate(model_and_processor, items, tmp_path, policies=["full"], run_info={"model": "another"}, overwrite=True)


def test_default_policies_include_fastv_when_registered():
    assert default_policies()[:3] == ["full", "plphp", "random"]

    class FastvPlugin:
        @plphp.hookimpl
        def plphp_presets(self):
            return [Preset(name="fastv", description="test stand-in", config={"preset": "random"})]

    if "fastv" in plphp.get_registry().presets():
        assert "fastv" in default_policies()
        return
    plugin = FastvPlugin()
    plphp.register_plugin(plugin, name="test-fastv")
    try:
        assert default_policies() == ["full", "plphp", "random", "fastv"]
    finally:
        plphp.unregister_plugin(plugin)
    assert "fastv" not in default_policies()


# -- JSONL datasets ----------------------------------------------------------------------------------------
def _write_dataset(folder: Path, rows: list[dict]) -> Path:
    pictures = folder / "pics"
    pictures.mkdir(exist_ok=True)
    for index, task in enumerate(make_tasks(4, seed=5, kinds=["compare"])):
        for number, image in enumerate(task.images()[:2]):
            image.save(pictures / f"{index}-{number}.png")
    path = folder / "data.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


GOOD_ROWS = [
    {"id": "a", "images": ["pics/0-0.png"], "question": "where is the red circle?", "answer": "row 1 column 2"},
    {
        "id": "b",
        "images": ["pics/1-0.png", "pics/1-1.png"],
        "question": "which images show a blue square?",
        "answer": "first",
    },
    {"id": "c", "images": ["pics/2-0.png", "pics/2-1.png"], "question": "is <image> like <image>?", "answer": "no"},
    {"id": "d", "images": ["pics/3-0.png"], "question": "what is in row 1?", "answer": "empty, empty, empty"},
]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"id": "x", "images": ["pics/nope.png"], "question": "q?", "answer": "a"},
            "line 3 \\(id 'x'\\): image file 'pics/nope.png' not found",
        ),
        ({"id": "x", "images": ["pics/0-0.png"], "answer": "a"}, "line 3 \\(id 'x'\\): no question"),
        ({"id": "x", "images": ["pics/0-0.png"], "question": "  ", "answer": "a"}, "line 3 \\(id 'x'\\): no question"),
        (
            {"id": "x", "images": ["pics/0-0.png"], "question": "<image> and <image>?", "answer": "a"},
            "line 3 \\(id 'x'\\): the question has 2 <image> placeholder\\(s\\) but the row lists 1 image",
        ),
        ({"id": "a", "images": [], "question": "q?", "answer": "a"}, "line 3 \\(id 'a'\\): id repeated"),
        (
            {"id": "x", "images": "pics/0-0.png", "question": "q?", "answer": "a"},
            "line 3 \\(id 'x'\\): images must be a list",
        ),
    ],
    ids=["missing-image", "no-question", "blank-question", "placeholders", "repeated-id", "images-not-a-list"],
)
def test_bad_rows_are_named(tmp_path, row, message):
    path = _write_dataset(tmp_path, [GOOD_ROWS[0], GOOD_ROWS[1], row])
    with pytest.raises(DatasetError, match=f"data.jsonl {message}"):
        load_jsonl(path)


def test_an_unreadable_image_stops_the_run_naming_the_row_and_keeps_finished_batches(model_and_processor, tmp_path):
    path = _write_dataset(tmp_path, GOOD_ROWS)
    good = (tmp_path / "pics" / "2-1.png").read_bytes()
    items = load_jsonl(path)  # an image unreadable when the rows are read is refused then (tests/test_error_paths.py)
    (tmp_path / "pics" / "2-1.png").write_bytes(b"not a png")
    settings = EvalSettings(batch_size=2, max_new_tokens=6)
    with pytest.raises(DatasetError, match="data.jsonl line 3 \\(id 'c'\\): cannot read an image"):
        _evaluate(model_and_processor, items, tmp_path / "out", policies=["full", "plphp"], settings=settings)
    assert {r["id"] for r in read_records(tmp_path / "out" / RECORDS)} == {"a", "b"}
    (tmp_path / "pics" / "2-1.png").write_bytes(good)
    results = _evaluate(model_and_processor, items, tmp_path / "out", policies=["full", "plphp"], settings=settings)
    assert results["policies"]["plphp"]["items"] == 4


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plphp", "eval", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )


def test_cli_runs_a_jsonl_dataset_through_a_saved_model_directory(tmp_path):
    model_dir = models.save_tiny("llava_onevision", tmp_path / "tiny-onevision")
    path = _write_dataset(tmp_path, GOOD_ROWS)
    result = _cli(
        "--model",
        str(model_dir),
        "--dataset",
        str(path),
        "-p",
        "full",
        "-p",
        "plphp",
        "--out",
        "out",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "plphp eval" in result.stdout and "recall" in result.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["policies"]) == {"full", "plphp"} and results["policies"]["plphp"]["items"] == 4
    assert results["settings"]["model"] == str(model_dir)
    (tmp_path / "pics" / "1-1.png").unlink()
    result = _cli("--model", str(model_dir), "--dataset", str(path), "--out", "out2", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.jsonl line 2 (id 'b'): image file 'pics/1-1.png' not found" in result.stdout


def test_cli_runs_the_builtin_tasks_with_the_default_policies(tmp_path):
    result = _cli("--num-items", "4", "--batch-size", "2", "--max-new-tokens", "8", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(results["policies"]) == default_policies()
    for name in default_policies():
        assert name in result.stdout
    assert (tmp_path / "out" / "eval.png").is_file()
    assert results["settings"]["model"] == "grid model (plphp, trained)"  # the default model
    assert results["settings"]["dataset"].endswith("cell layout)")  # the pictures it was trained on


def test_cli_builds_a_random_tiny_architecture_on_request(tmp_path):
    result = _cli("--arch", "qwen2_vl", "--num-items", "2", "-p", "plphp", "--no-recall", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["settings"]["model"] == "tiny qwen2_vl (random weights, seed 0, 12 layers)"
    result = _cli("--arch", "qwen3", "--num-items", "2", "--out", "out2", cwd=tmp_path)
    assert result.returncode == 2 and "'qwen3' is not a built-in model" in result.stdout
    result = _cli("--layout", "small", "--num-items", "2", "--out", "out3", cwd=tmp_path)
    assert result.returncode == 2 and "layout: 'small' is not allowed; use auto, cell, quadrant" in result.stdout


def test_auto_layout_is_what_the_model_was_trained_on(tmp_path):
    from plphp.evaluation.dataset import resolve_layout
    from plphp.models.builtin import task_layout

    assert task_layout("grid") == "cell" and task_layout("qwen2_vl") == "cell"
    assert task_layout(tmp_path) == "cell"  # no training.json
    (tmp_path / "training.json").write_text(json.dumps({"settings": {"layout": "quadrant"}}))
    assert task_layout(tmp_path) == resolve_layout("auto", tmp_path) == "quadrant"
    assert resolve_layout("cell", tmp_path) == "cell"


def test_policy_files_are_named_by_their_stem_unless_two_clash():
    from plphp.evaluation.run import _named

    assert list(_named(["plphp", "configs/window8.yaml"])) == ["plphp", "window8"]
    assert list(_named(["a/w.yaml", "b/w.yaml"])) == ["a/w.yaml", "b/w.yaml"]
