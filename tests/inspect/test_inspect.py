"""`plphp inspect`: every figure on the grid model and two tiny architectures, its JSON equal to the
session's report, the page self-contained, and one-line errors."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from plphp.backends.inputs import chat_inputs
from plphp.backends.session import apply
from plphp.errors import ConfigError
from plphp.evaluation.dataset import IMAGE_MARKER, builtin_items
from plphp.inspect import InspectSettings, run_inspect
from plphp.inspect.run import SECTIONS
from plphp.models import make_image
from plphp.models.builtin import load_builtin_model

PNG = b"\x89PNG"


def _check_outputs(out: Path, policies: list[str]) -> dict:
    data = json.loads((out / "inspect.json").read_text())
    assert set(SECTIONS) <= set(data)
    files = [figure["file"] for figure in data["figures"]]
    for stem in ("vision-attention", "retention", "recall", "head-diversity"):
        assert f"{stem}.png" in files
    assert sum(f.startswith("kept-patches-") for f in files) == len(policies) * len(data["layers"])
    page = (out / "index.html").read_text()
    for file in files:
        assert (out / file).read_bytes()[:4] == PNG
        assert f"data-file='{file}'" in page
    # self-contained: every picture is a data URI of the PNG next to it; nothing from another host
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert [base64.b64decode(u) for u in uris] == [(out / f).read_bytes() for f in files]
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page) and "<script" not in page
    assert set(data["vision_attention"]) == set(data["retention"]) == set(data["recall"]) == set(policies)
    return data


def test_the_command_on_the_grid_model_writes_every_figure(tmp_path):
    out = tmp_path / "inspect-out"
    done = subprocess.run(
        [sys.executable, "-m", "plphp", "inspect", "--num-items", "2", "-p", "plphp", "-p", "snapkv",
         "--recall-tokens", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote 6 figures" in done.stdout
    data = _check_outputs(out, ["plphp", "snapkv"])
    gamma = data["vision_attention"]["plphp"]
    assert gamma["alpha"] == 0.3 and gamma["beta"] == 0.1 and gamma["tier"][:2] == ["unpruned", "unpruned"]
    assert data["vision_attention"]["snapkv"]["alpha"] is None
    assert list(data["head_diversity"]["between"]) == ["plphp vs snapkv"]
    assert len(data["head_diversity"]["matrices"]["plphp"][str(data["layers"][0])]) == data["num_kv_heads"]


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_vl"])
def test_tiny_architectures_get_every_figure(tmp_path, arch):
    model, processor, _ = load_builtin_model(arch)
    items = builtin_items(2, seed=1, max_images=2)
    data = run_inspect(
        model, processor, items, ["plphp"], tmp_path, settings=InspectSettings(layers=[3, 5], recall_tokens=2),
        console=Console(file=io.StringIO()),
    )  # fmt: skip
    checked = _check_outputs(tmp_path, ["plphp"])
    assert checked["layers"] == [3, 5] and len(data["kept_patches"]) == 2
    # every image of the first item is placed on the picture (no strip fallback)
    images = data["kept_patches"][0]["images"]
    assert images and all(image["layout"]["on_picture"] for image in images)


def test_the_json_equals_the_sessions_report(tmp_path):
    model, processor, _ = load_builtin_model("grid")
    items = builtin_items(1, seed=3)
    data = run_inspect(
        model, processor, items, ["plphp"], tmp_path, settings=InspectSettings(recall_tokens=0),
        console=Console(file=io.StringIO()),
    )  # fmt: skip
    inputs = chat_inputs(processor, [(items[0].question, items[0].images())], image_marker=IMAGE_MARKER)
    with torch.inference_mode(), apply(model, "plphp") as session:
        model.generate(**inputs, max_new_tokens=1, do_sample=False)
    report = session.report
    ours = data["reports"][0]["policies"]["plphp"]["layers"]
    assert len(ours) == len(report.layers) == data["num_layers"]
    for row, layer in zip(ours, report.layers):
        assert row["gamma"] == pytest.approx(float(layer.vision_attention[0]), abs=1e-6)
        assert row["retention"] == pytest.approx(float(layer.retention[0]), abs=1e-6)
        assert row["budget"] == layer.budget[0] and row["pruned"] == layer.pruned
        if layer.kept_positions is None:
            assert row["kept_positions"] is None
        else:
            assert row["kept_positions"] == [[int(p) for p in head if p >= 0] for head in layer.kept_positions[0]]
    # the figures' sections are the report's numbers (one item: the mean is the item)
    assert data["vision_attention"]["plphp"]["mean"] == pytest.approx([r["gamma"] for r in ours], abs=1e-6)
    assert data["retention"]["plphp"]["mean"] == pytest.approx([r["retention"] for r in ours], abs=1e-6)
    assert data["retention"]["plphp"]["kept_mean"] == [r["budget"] for r in ours]
    # the heads' γ average to the layer's γ, and the picture's kept positions are the report's
    for row, heads in zip(ours, data["reports"][0]["policies"]["plphp"]["head_gamma"]):
        assert sum(heads) / len(heads) == pytest.approx(row["gamma"], abs=1e-5)
    pictured = data["kept_patches"][0]
    layer = report.layers[pictured["layer"]]
    for head, kept in enumerate(pictured["images"][0]["kept"]):
        assert kept == sorted(int(p) for p in layer.kept_positions[0, head] if p >= 0)
    assert data["recall"]["plphp"] is None  # --recall-tokens 0


def test_one_input_from_image_files(tmp_path):
    picture = tmp_path / "a.png"
    make_image(96, 96).save(picture)
    from typer.testing import CliRunner

    from plphp.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["inspect", "--image", str(picture), "--prompt", "what is in the top row?", "--recall-tokens", "2",
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = _check_outputs(out, ["plphp"])
    assert data["items"] == ["input"] and data["reports"][0]["question"] == "what is in the top row?"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "99"], "--layer: 99 is not a layer of grid model (plphp, trained), which has 8 decoder layers; allowed are 0 to 7"),
        (["--prompt", "hi"], "--prompt: give the picture(s) it asks about with --image"),
        (["--image", "nope.png", "--prompt", "hi"], "--image: file 'nope.png' not found"),
        (["-p", "plphp", "-p", "plphp"], "--policy: two policies are named 'plphp'"),
        (["-p", "plhpp"], "unknown preset 'plhpp'"),
    ],
)  # fmt: skip
def test_errors_are_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from plphp.cli import app

    result = CliRunner().invoke(app, ["inspect", "--out", str(tmp_path / "o"), *args], terminal_width=400)
    assert result.exit_code == 2, result.output
    assert "error: " + message in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_the_layer_range_is_checked_before_any_model_run(monkeypatch):
    model, processor, _ = load_builtin_model("grid")
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(ConfigError, match="allowed are 0 to 7"):
        run_inspect(model, processor, builtin_items(1), None, "unused", settings=InspectSettings(layers=[-1]))
