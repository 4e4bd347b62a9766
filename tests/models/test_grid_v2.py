"""The grid model v2's definition: patch-local vision tokens, the label after each image, shipped files."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from transformers import AutoModelForImageTextToText

from plphp.backends.inputs import chat_inputs
from plphp.models import load_builtin_model
from plphp.models.grid import grid_vocabulary
from plphp.models.grid_v2 import (
    GRID_V2_MODEL_DIR,
    TOKENS_PER_IMAGE,
    build_grid_v2_config,
    build_grid_v2_processor,
)
from plphp.tasks import make_tasks


def test_chat_template_puts_each_ordinal_label_after_its_image():
    processor = build_grid_v2_processor()
    content = [{"type": "image"}] * 3 + [{"type": "text", "text": "which images show a red circle?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    assert text == (
        "<|im_start|>user <image> first <image> second <image> third which images show a red circle?"
        "<|im_end|><|im_start|>assistant"
    )


def test_processor_gives_36_tokens_per_image_2x2_per_grid_cell():
    processor = build_grid_v2_processor()
    config = build_grid_v2_config()
    items = make_tasks(5, seed=0)
    inputs = chat_inputs(processor, [(item.question, item.images()) for item in items])
    counts = (inputs["input_ids"] == config.image_token_index).sum(dim=1).tolist()
    assert counts == [TOKENS_PER_IMAGE * len(item.scenes) for item in items] and TOKENS_PER_IMAGE == 36
    assert config.text_config.num_hidden_layers == 16


def test_each_vision_token_depends_only_on_its_own_patch():
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(build_grid_v2_config(num_hidden_layers=1)).eval()
    pixels = torch.randn(1, 3, 72, 72)
    changed = pixels.clone()
    changed[:, :, 12:24, 36:48] = 0.0  # patch (row 1, column 3) of the 6 x 6
    with torch.no_grad():
        before, after = (model.model.get_image_features(pixel_values=p).pooler_output[0] for p in (pixels, changed))
    moved = ((before - after).abs().amax(dim=-1) > 0).nonzero().flatten().tolist()
    assert moved == [1 * 6 + 3]


def test_v2_is_shipped_small_and_loads_in_a_process_that_never_imported_plphp():
    assert (GRID_V2_MODEL_DIR / "model.safetensors").stat().st_size <= 25 * 2**20
    code = (
        "import sys, json\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"path = {str(GRID_V2_MODEL_DIR)!r}\n"
        "model = AutoModelForImageTextToText.from_pretrained(path)\n"
        "processor = AutoProcessor.from_pretrained(path)\n"
        "print(json.dumps([type(model).__name__, type(processor).__name__, processor.tokenizer.vocab_size,"
        " model.config.text_config.num_hidden_layers, 'plphp' in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "LlavaForConditionalGeneration",
        "LlavaProcessor",
        len(grid_vocabulary()),
        16,
        False,
    ]
    model, processor, description = load_builtin_model("grid-v2")
    assert "v2" in description and processor.chat_template == build_grid_v2_processor().chat_template


def test_v2_is_scored_on_the_pictures_it_was_trained_on():
    from plphp.models.builtin import task_layout

    record = json.loads((GRID_V2_MODEL_DIR / "training.json").read_text())
    assert task_layout("grid-v2") == record["settings"]["layout"] == "quadrant"
    assert task_layout("grid") == "cell"  # v1 predates the layouts: its pictures fill the cells
