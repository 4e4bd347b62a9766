"""Tests of the tiny random-weight models of real architectures (plphp.models)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from plphp import models
from plphp.backends.inputs import chat_inputs

ARCHS = models.ARCHITECTURES

#: Vision tokens of one image of 64x64 and of 128x96 (width x height) pixels, alone in a sample.
EXPECTED_VISION_TOKENS = {
    "llava": (36, 36),  # fixed 48x48 crop
    "llava_next": (88, 70),  # any-res tiling: base tile + unpadded grid + row newlines
    "llava_onevision": (88, 70),
    "qwen2_vl": (16, 48),  # one token per 16x16 pixels after smart resizing
    "qwen2_5_vl": (16, 48),
    "qwen3_vl": (16, 48),
    "qwen3_5": (16, 48),
    "gemma3": (16, 16),  # a fixed 64x64 input pooled to 4x4
    "mistral3": (16, 48),  # one [IMG] per 16x16 pixels (plus a break or end token per row)
    "internvl": (80, 112),  # 32x32 tiles (2x2 / 3x2) plus a thumbnail, 16 tokens each
    "idefics3": (160, 160),  # longest edge to 96: 3x3 sub-images of 32x32 plus a global image, 16 tokens each
    "smolvlm": (160, 160),
    "llava_next_video": (88, 70),  # LLaVA-NeXT's images
}
#: The image token of the architectures whose token is not LLaVA's "<image>" (Qwen's are checked apart).
IMAGE_TOKENS = {"gemma3": "<image_soft_token>", "mistral3": "[IMG]"}
FIXED_IMAGE_SIZE = ("llava", "gemma3", "idefics3", "smolvlm")

MIXED_SAMPLES = [
    ("Compare the two images.", [(64, 64, 1), (128, 96, 2)]),
    ("Describe the image.", [(96, 64, 3)]),
    ("Hello, how are you today?", []),
]


def mixed_samples():
    return [(q, [models.make_image(w, h, seed=s) for w, h, s in imgs]) for q, imgs in MIXED_SAMPLES]


def vision_counts(inputs, config) -> list[int]:
    return (inputs["input_ids"] == config.image_token_id).sum(dim=1).tolist()


def new_tokens(out: torch.Tensor, inputs) -> torch.Tensor:
    return out[:, inputs["input_ids"].shape[1] :]


@pytest.mark.parametrize("arch", ARCHS)
def test_config_shapes_and_token_ids_match_the_tokenizer(arch):
    config = models.build_tiny_config(arch)
    processor = models.build_tiny_processor(arch)
    tokenizer = processor.tokenizer
    text = config.get_text_config()

    assert text.num_hidden_layers >= 4
    assert (text.num_attention_heads, text.num_key_value_heads) == (4, 2)
    assert text.hidden_size // text.num_attention_heads == 16
    assert text.vocab_size == len(tokenizer) < 1000
    if arch != "gemma3":  # Gemma3Processor's image_token_id is its placeholder, <start_of_image>
        assert processor.image_token_id == config.image_token_id
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.chat_template
    if arch.startswith("qwen"):
        for attr, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]:
            assert getattr(config, attr) == tokenizer.convert_tokens_to_ids(token)
    elif arch in IMAGE_TOKENS:
        assert config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKENS[arch])
    elif arch in ("llava", "llava_next", "llava_onevision", "llava_next_video"):
        assert config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
        assert tokenizer.convert_tokens_to_ids("<video>") != tokenizer.unk_token_id
    if arch in ("llava_onevision", "llava_next_video"):
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<video>")


def test_config_overrides_reach_the_sub_configs():
    config = models.build_tiny_config(
        "qwen2_vl", num_layers=6, text_config__initializer_range=0.02, vision_config__depth=1, vision_end_token_id=7
    )
    assert config.text_config.num_hidden_layers == len(config.text_config.layer_types) == 6
    assert config.text_config.initializer_range == 0.02
    assert config.vision_config.depth == 1
    assert config.vision_end_token_id == 7
    model = models.build_tiny_model("llava", num_layers=5, hidden_size=128, num_heads=8, num_kv_heads=4)
    assert len(model.model.language_model.layers) == 5
    assert model.config.text_config.head_dim == 16


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        models.build_tiny_config("gpt2")


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_batch_of_one_is_not_degenerate(arch):
    model = models.build_tiny_model(arch)
    processor = models.build_tiny_processor(arch)
    assert not model.training
    inputs = chat_inputs(processor, [("What is shown in the picture?", [models.make_image(96, 64)])])
    assert vision_counts(inputs, model.config)[0] > 0

    out = new_tokens(model.generate(**inputs, max_new_tokens=8), inputs)
    assert out.shape == (1, 8)
    assert len(set(out[0].tolist())) >= 3
    assert isinstance(processor.batch_decode(out, skip_special_tokens=True)[0], str)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "mode", [{}, {"do_sample": True, "top_k": 50}, {"num_beams": 2}], ids=["greedy", "sample", "beams"]
)
def test_generate_mixed_padded_batch(arch, mode):
    model = models.build_tiny_model(arch)
    processor = models.build_tiny_processor(arch)
    inputs = chat_inputs(processor, mixed_samples())

    counts = vision_counts(inputs, model.config)
    assert counts[0] > 0 and counts[1] > 0 and counts[2] == 0
    mask = inputs["attention_mask"]
    assert (mask[:, -1] == 1).all(), "prompts are left-padded"
    assert (mask.sum(dim=1) < mask.shape[1]).any()

    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=5, **mode)
    assert out.shape[0] == 3 and 1 <= out.shape[1] - inputs["input_ids"].shape[1] <= 5
    if mode.get("do_sample"):
        torch.manual_seed(0)
        assert torch.equal(model.generate(**inputs, max_new_tokens=5, **mode), out)


@pytest.mark.parametrize("arch", ARCHS)
def test_padded_batch_matches_single_samples(arch):
    model = models.build_tiny_model(arch)
    processor = models.build_tiny_processor(arch)
    samples = mixed_samples()
    batch = chat_inputs(processor, samples)
    gen = {"max_new_tokens": 4, "output_scores": True, "return_dict_in_generate": True}
    batched = model.generate(**batch, **gen)
    for i, sample in enumerate(samples):
        alone = chat_inputs(processor, [sample])
        single = model.generate(**alone, **gen)
        torch.testing.assert_close(batched.scores[0][i], single.scores[0][0], atol=1e-4, rtol=1e-4)
        tokens = new_tokens(single.sequences, alone)[0].tolist()
        batched_tokens = new_tokens(batched.sequences, batch)[i].tolist()[: len(tokens)]
        assert batched_tokens == tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_vision_tokens_per_image_size(arch):
    config = models.build_tiny_config(arch)
    processor = models.build_tiny_processor(arch)
    counts = tuple(
        vision_counts(chat_inputs(processor, [("q", [models.make_image(w, h)])]), config)[0]
        for w, h in [(64, 64), (128, 96)]
    )
    assert counts == EXPECTED_VISION_TOKENS[arch]
    # LLaVA-1.5 crops and Gemma 3 resizes every image to one fixed square; Idefics3 / SmolVLM scale
    # both to a 96-pixel square.
    if arch not in FIXED_IMAGE_SIZE:
        assert counts[0] != counts[1]


@pytest.mark.parametrize("arch", ARCHS)
def test_vision_tokens_in_the_mixed_batch(arch):
    # LLaVA-OneVision gives each image of a multi-image sample only its base tile (+ a newline).
    expected = {
        "llava": [72, 36, 0],
        "llava_next": [88 + 70, 70, 0],
        "llava_onevision": [17 + 17, 70, 0],
        "qwen2_vl": [16 + 48, 24, 0],
        "qwen2_5_vl": [16 + 48, 24, 0],
        "qwen3_vl": [16 + 48, 24, 0],
        "qwen3_5": [16 + 48, 24, 0],
        "gemma3": [16 + 16, 16, 0],
        "mistral3": [16 + 48, 24, 0],
        "internvl": [80 + 112, 112, 0],
        "idefics3": [160 + 160, 112, 0],
        "smolvlm": [160 + 160, 112, 0],
        "llava_next_video": [88 + 70, 70, 0],
    }
    inputs = chat_inputs(models.build_tiny_processor(arch), mixed_samples())
    assert vision_counts(inputs, models.build_tiny_config(arch)) == expected[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_with_auto_classes(arch, tmp_path):
    models.register_processors()
    path = models.save_tiny(arch, tmp_path / arch, seed=1)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    reference = models.build_tiny_model(arch, seed=1)
    assert type(processor) is type(models.build_tiny_processor(arch))
    assert type(model) is type(reference)

    inputs = chat_inputs(processor, mixed_samples())
    reference_inputs = chat_inputs(models.build_tiny_processor(arch), mixed_samples())
    assert inputs.keys() == reference_inputs.keys()
    for key in inputs:
        torch.testing.assert_close(inputs[key], reference_inputs[key], atol=0, rtol=0)
    out = model.generate(**inputs, max_new_tokens=5)
    assert torch.equal(out, reference.generate(**inputs, max_new_tokens=5))


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_are_deterministic_by_seed(arch):
    rng_state = torch.get_rng_state()
    first, again, other = (models.build_tiny_model(arch, seed=s).state_dict() for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), rng_state), "building a model leaves the global RNG alone"
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_processor_and_images_are_deterministic():
    for arch in ARCHS:
        a, b = models.build_tiny_processor(arch).tokenizer, models.build_tiny_processor(arch).tokenizer
        assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    image = models.make_image(40, 30, seed=5)
    assert image.size == (40, 30) and image.mode == "RGB"
    assert image.tobytes() == models.make_image(40, 30, seed=5).tobytes()
    assert image.tobytes() != models.make_image(40, 30, seed=6).tobytes()


def test_model_options():
    model = models.build_tiny_model("qwen2_vl", dtype=torch.bfloat16, attn_implementation="eager")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config.get_text_config()._attn_implementation == "eager"
    processor = models.build_tiny_processor("qwen2_vl")
    inputs = chat_inputs(processor, [("Describe the image.", [models.make_image(64, 32)])])
    assert model.generate(**inputs, max_new_tokens=3).shape[1] <= inputs["input_ids"].shape[1] + 3


def _fresh_python(script: str, path, tmp_path) -> subprocess.CompletedProcess:
    """Run `script` with the saved model directory as its argument in a new, offline interpreter
    (no terminal: a custom-code prompt is refused, not answered)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=300,
    )


def test_saved_processor_in_a_process_that_never_imported_plphp(tmp_path):
    path = models.save_tiny("qwen2_vl", tmp_path / "model")
    script = (
        "import sys\n"
        "from transformers import AutoProcessor\n"
        "try:\n"
        "    AutoProcessor.from_pretrained(sys.argv[1])\n"
        "    print('loaded-without-trust')\n"
        "except ValueError:\n"
        "    print('asked-for-trust')\n"
        "processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "print(type(processor).__name__, processor.image_token_id)\n"
    )
    result = _fresh_python(script, path, tmp_path)
    assert result.returncode == 0, result.stderr
    # transformers prints its y/N prompt on stdout before refusing
    assert "asked-for-trust" in result.stdout and "loaded-without-trust" not in result.stdout
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"TinyQwen2VLProcessor {models.build_tiny_config('qwen2_vl').image_token_id}"
    )


def test_importing_plphp_registers_no_processor_class_and_register_processors_does(tmp_path):
    path = models.save_tiny("qwen2_vl", tmp_path / "model")
    script = (
        "import sys\n"
        "from transformers import AutoProcessor\n"
        "import plphp.models\n"
        "try:\n"
        "    AutoProcessor.from_pretrained(sys.argv[1])\n"
        "    print('loaded-on-import')\n"
        "except ValueError:\n"
        "    print('asked-for-trust')\n"
        "plphp.models.register_processors()\n"
        "plphp.models.register_processors()  # a second call changes nothing\n"
        "processor = AutoProcessor.from_pretrained(sys.argv[1])\n"
        "print(type(processor).__name__, processor.image_token_id)\n"
    )
    result = _fresh_python(script, path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "asked-for-trust" in result.stdout and "loaded-on-import" not in result.stdout
    assert (
        result.stdout.strip().splitlines()[-1]
        == f"TinyQwen2VLProcessor {models.build_tiny_config('qwen2_vl').image_token_id}"
    )


def test_load_tiny_loads_a_saved_directory_in_a_fresh_process_without_a_prompt(tmp_path):
    path = models.save_tiny("qwen2_5_vl", tmp_path / "model")
    script = (
        "import sys\n"
        "from plphp.models import load_tiny\n"
        "model, processor = load_tiny(sys.argv[1])\n"
        "print(type(model).__name__, type(processor).__name__, model.training)\n"
    )
    result = _fresh_python(script, path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Qwen2_5_VLForConditionalGeneration TinyQwen2_5_VLProcessor False"
