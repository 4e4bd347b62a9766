"""The command line, run the way a user runs it (subprocesses on files on disk)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plphp.models import make_image, save_tiny

ROOT = Path(__file__).resolve().parents[1]


def plphp_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plphp", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )


def test_policies_lists_components_presets_parameters_and_ranges():
    result = plphp_cli("policies")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "last_token",
        "vision_tiers",
        "head_topk",
        "uniform",
        "random",
        "plphp",
        "full",
        "alpha",
        "0–1",
        "1–4096 or 'question'",
        "gqa_reduce",
        "Qwen2VLForConditionalGeneration",
        "shared_topk",
        "adaptive_topk",
        "snapkv",
        "key_norm",
        "pyramid_stages",
        "withdraw",
        "prefill",
    ):
        assert expected in out, expected
    from plphp.registry import get_registry

    for preset in get_registry().presets():
        assert f"│ {preset} " in out, preset


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny("llava_onevision", tmp_path_factory.mktemp("models") / "tiny-onevision")


def _write_config(folder: Path, model_dir: Path, extra: str = "") -> Path:
    make_image(96, 64, seed=1).save(folder / "first.png")
    make_image(64, 96, seed=2).save(folder / "second.png")
    config = folder / "run.yaml"
    config.write_text(
        f"model:\n  path: {model_dir}\n  dtype: float32\n  device: cpu\n"
        "inputs:\n  prompt: compare the two pictures\n  images: [first.png, second.png]\n"
        "generation:\n  max_new_tokens: 8\n"
        "policy:\n  preset: plphp\n  start_layer: 1\n" + extra
    )
    return config


def test_run_generates_from_a_saved_model_with_png_images_and_a_yaml_config(tmp_path, model_dir):
    config = _write_config(tmp_path, model_dir)
    result = plphp_cli("run", "--config", str(config), "--baseline", "--json", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "unpruned:" in result.stdout and "plphp:" in result.stdout
    assert "vision KV removed" in result.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data["answers"]) == {"unpruned", "plphp"}
    report = data["report"]
    assert report["kv_bytes_after"] < report["kv_bytes_before"]
    assert len(report["num_vision"]) == 1 and report["num_vision"][0] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  allocater: {retention: 0.2}\n", "policy.allocater: unknown field"),
        ("  allocator: {retention: 2}\n", "policy.allocator.retention"),
    ],
)
def test_run_reports_bad_configs_in_one_line(tmp_path, model_dir, extra, message):
    config = _write_config(tmp_path, model_dir, extra)
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert message in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_run_takes_a_preset_from_the_command_line(tmp_path, model_dir):
    config = _write_config(tmp_path, model_dir)
    result = plphp_cli("run", "--config", str(config), "--policy", "full")
    assert result.returncode == 0, result.stderr
    assert "full:" in result.stdout and "vision KV removed: 0.0%" in result.stdout


def test_run_names_missing_images_and_fields(tmp_path, model_dir):
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  path: {model_dir}\ninputs:\n  prompt: hi\n  images: [nowhere.png]\n")
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2 and "inputs.images.0: file 'nowhere.png' not found" in result.stdout
    config.write_text("inputs:\n  prompt: hi\n")
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2 and "model: Field required" in result.stdout


def test_demo_prints_a_report_with_the_bytes_saved_and_pictures_the_kept_patches(tmp_path):
    result = plphp_cli("demo", "--max-new-tokens", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plphp report" in result.stdout and "bytes" in result.stdout and "vision KV removed" in result.stdout
    assert "reference: row" in result.stdout and "attention recall" in result.stdout
    assert (tmp_path / "plphp-demo.png").read_bytes()[:4] == b"\x89PNG"


def test_docs_build_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    # Offline: no page loads a script, stylesheet or font from another host, and no page holds a
    # mermaid block (the theme would fetch mermaid from a CDN to draw it).
    pages = list((tmp_path / "site").rglob("*.html"))
    assert len(pages) > 10
    external = re.compile(r"""<(?:script|link|img)\b[^>]*(?:src|href)=["']?(?:https?:)?//""", re.I)
    for page in pages:
        text = page.read_text()
        assert not external.search(text), f"{page.relative_to(tmp_path)} loads from another host"
        assert 'class="mermaid"' not in text and "fonts.googleapis" not in text, page.relative_to(tmp_path)
    assert (tmp_path / "site" / "img" / "data-flow.svg").is_file()


def test_the_data_flow_picture_is_up_to_date():
    import runpy

    drawn = runpy.run_path(str(ROOT / "docs" / "img" / "data-flow.py"))["svg"]()
    assert (ROOT / "docs" / "img" / "data-flow.svg").read_text() == drawn


def test_run_refuses_unreadable_images_and_missing_model_directories_in_one_line(tmp_path, model_dir):
    config = _write_config(tmp_path, model_dir)
    (tmp_path / "second.png").write_text("not a picture")
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "inputs.images.1: 'second.png' cannot be read as an image: not an image format Pillow can read" in (
        " ".join(result.stdout.split())
    )
    config.write_text(config.read_text().replace("[first.png, second.png]", "[first.png, .]"))
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2 and "inputs.images.1: '.' is a directory, not an image file" in result.stdout
    config.write_text(config.read_text().replace("[first.png, .]", "[first.png]").replace(str(model_dir), "/no/model"))
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2 and "model.path: directory '/no/model' does not exist" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_run_refuses_a_start_layer_beyond_the_model_and_names_a_policy_file_by_its_stem(tmp_path, model_dir):
    config = _write_config(tmp_path, model_dir)
    config.write_text(config.read_text().replace("start_layer: 1", "start_layer: 50"))
    result = plphp_cli("run", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "policy.start_layer: 50 is not a layer of this model, which has" in " ".join(result.stdout.split())
    (tmp_path / "light.yaml").write_text("preset: plphp\nstart_layer: 1\nallocator: {retention: 0.5}\n")
    result = plphp_cli("run", "--config", str(config), "--policy", str(tmp_path / "light.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("light:") and "plphp report: light: stage=decode" in result.stdout


def test_demo_refuses_a_layer_out_of_range_before_running(tmp_path):
    result = plphp_cli("demo", "--layer", "99", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "--layer: 99 is not a layer of the grid model, which has" in out and "allowed are 0 to" in out
    assert "Q1" not in result.stdout and "Traceback" not in result.stdout + result.stderr
