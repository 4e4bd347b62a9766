"""The grid model's definition: tokenizer, chat template, processor, adapter geometry, shipped files."""

from __future__ import annotations

import json
import subprocess
import sys

from plphp.backends.inputs import chat_inputs
from plphp.models.grid import (
    GRID_MODEL_DIR,
    TOKENS_PER_IMAGE,
    build_grid_config,
    build_grid_processor,
    build_grid_tokenizer,
    grid_vocabulary,
)
from plphp.tasks import make_tasks, vocabulary


def test_every_task_word_is_one_token_and_answers_decode_back():
    tokenizer = build_grid_tokenizer()
    for word in vocabulary():
        assert tokenizer.tokenize(word) == [word]
    for item in make_tasks(50, seed=3):
        ids = tokenizer(f"{item.question} {item.answer}", add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(tokenizer(item.answer, add_special_tokens=False)["input_ids"]) == item.answer
    assert tokenizer.tokenize("Where is the PURPLE circle?") == ["where", "is", "the", "<unk>", "circle", "?"]
    assert tokenizer("purple", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_chat_template_labels_each_image_with_its_ordinal():
    processor = build_grid_processor()
    content = [{"type": "image"}] * 3 + [{"type": "text", "text": "which images show a red circle?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    assert text == (
        "<|im_start|>user first <image> second <image> third <image> which images show a red circle?"
        "<|im_end|><|im_start|>assistant"
    )
    five = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}] * 5}])
    assert five.count("<image>") == 5 and "fifth" not in five  # no label past the fourth


def test_processor_gives_81_tokens_per_image_on_a_3x3_patch_grid_per_cell():
    processor = build_grid_processor()
    config = build_grid_config()
    items = make_tasks(5, seed=0)  # four single-image questions and a compare over two images
    inputs = chat_inputs(processor, [(item.question, item.images()) for item in items])
    counts = (inputs["input_ids"] == config.image_token_index).sum(dim=1).tolist()
    assert counts == [TOKENS_PER_IMAGE * len(item.scenes) for item in items] and TOKENS_PER_IMAGE == 81
    assert inputs["pixel_values"].shape == (sum(len(item.scenes) for item in items), 3, 72, 72)
    assert (inputs["attention_mask"][:, -1] == 1).all()  # left padding


def test_the_grid_model_is_shipped_small_and_loads_in_a_process_that_never_imported_plphp():
    weights = GRID_MODEL_DIR / "model.safetensors"
    assert weights.is_file(), f"{weights} is missing: run training/train_grid_model.py"
    assert weights.stat().st_size <= 25 * 2**20
    code = (
        "import sys, json\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer\n"
        f"path = {str(GRID_MODEL_DIR)!r}\n"
        "model = AutoModelForImageTextToText.from_pretrained(path)\n"
        "processor = AutoProcessor.from_pretrained(path)\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        "print(json.dumps([type(model).__name__, type(processor).__name__, tokenizer.vocab_size,"
        " 'plphp' in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, processor, vocab_size, imported_plphp = json.loads(result.stdout.strip().splitlines()[-1])
    assert (name, processor, vocab_size, imported_plphp) == (
        "LlavaForConditionalGeneration",
        "LlavaProcessor",
        len(grid_vocabulary()),
        False,
    )


def test_shipped_config_matches_the_definition():
    shipped = json.loads((GRID_MODEL_DIR / "config.json").read_text())
    built = build_grid_config().to_dict()
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert shipped["text_config"][key] == built["text_config"][key]
    assert shipped["vision_config"]["image_size"] == built["vision_config"]["image_size"]
    assert shipped["image_token_index"] == built["image_token_index"]


def test_grid_config_is_a_gqa_model_with_at_least_four_layers():
    text = build_grid_config().text_config
    assert text.num_hidden_layers >= 4 and text.num_key_value_heads < text.num_attention_heads
