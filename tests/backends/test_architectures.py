"""What each newer architecture's adapter knows (plphp/backends/architectures/), on its tiny model.

- Qwen3-VL: a prefill-stage start inside the DeepStack layers is refused with one line; the
  decode stage prunes those layers (`tests/backends/test_contract.py` runs it from layer 0).
- Gemma 3: sliding-window layers keep exactly the unpruned cache, global layers are pruned, and the
  image tokens' bidirectional prefill attention is unchanged.
- Mistral 3: `[IMG_BREAK]` / `[IMG_END]` are text, an image is one segment, its layout is its rows.
- Qwen3.5: the linear-attention layers are never pruned and their recurrent state is untouched.
"""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.errors import ConfigError
from plphp.registry import get_registry
from plphp.testing import tiny_vlm


def _adapter(model):
    return get_registry().adapter_for(model)


def _prefill(model, inputs, policy=None, **kwargs):
    """One prefill forward (sdpa), plain or inside a session: `(output, report)`."""
    if policy is None:
        with torch.inference_mode():
            return model(**inputs, use_cache=True), None
    with plphp.apply(model, policy, **kwargs) as session, torch.inference_mode():
        output = model(**inputs, use_cache=True)
    return output, session.report


# -- Qwen3-VL --------------------------------------------------------------------------------------


def test_qwen3_vl_deepstack_is_active_in_the_tiny_model():
    vlm = tiny_vlm("qwen3_vl")
    assert _adapter(vlm.model).deepstack_layers() == [0, 1]
    inputs = vlm.inputs["batch1"]
    plain, _ = _prefill(vlm.model, inputs)
    language_model = vlm.model.model.language_model
    original = language_model._deepstack_process
    language_model._deepstack_process = lambda hidden, masks, embeds: hidden  # DeepStack off
    try:
        without, _ = _prefill(vlm.model, inputs)
    finally:
        language_model._deepstack_process = original
    assert (plain.logits - without.logits).abs().max() > 1e-3, "DeepStack must matter, or the refusal proves nothing"


@pytest.mark.parametrize("policy", [{"preset": "fastv", "start_layer": 1}, "vtw", "pyramiddrop"])
def test_qwen3_vl_refuses_a_prefill_stage_start_inside_deepstack(policy):
    model = tiny_vlm("qwen3_vl").model
    with pytest.raises(ConfigError) as error:
        plphp.apply(model, policy)
    message = str(error.value)
    assert "\n" not in message and "DeepStack" in message and "allowed are 2 to 3" in message


def test_qwen3_vl_without_the_refusal_deepstack_fails_deep_inside_transformers(monkeypatch):
    """What the refusal saves a user from: DeepStack indexes the prompt's vision positions in a
    sequence that tokens have already left."""
    from plphp.backends.architectures.qwen2_vl import Qwen2VLAdapter
    from plphp.backends.architectures.qwen3_vl import Qwen3VLAdapter

    monkeypatch.setattr(Qwen3VLAdapter, "unprunable_layers", Qwen2VLAdapter.unprunable_layers)
    vlm = tiny_vlm("qwen3_vl")
    with pytest.raises(IndexError, match="shape of the mask"):
        _prefill(vlm.model, vlm.inputs["batch3"], {"preset": "fastv", "start_layer": 1})


def test_qwen3_vl_prefill_stage_after_deepstack_and_decode_stage_inside_it():
    vlm = tiny_vlm("qwen3_vl")
    _, report = _prefill(vlm.model, vlm.inputs["batch3"], "fastv")  # K = 2, after the DeepStack layers
    assert [layer.pruned for layer in report.layers] == [False, False, True, True]
    _, report = _prefill(vlm.model, vlm.inputs["batch3"], "plphp", start_layer=0)
    assert report.layers[0].pruned and report.layers[1].pruned


# -- Gemma 3 ---------------------------------------------------------------------------------------


def test_gemma3_sliding_layers_keep_the_unpruned_cache_and_global_layers_are_pruned():
    vlm = tiny_vlm("gemma3")
    model, inputs = vlm.model, vlm.inputs["batch3"]
    config = model.config.text_config
    sliding = [kind == "sliding_attention" for kind in config.layer_types]
    assert sliding == [True, False, True, False]
    plain, _ = _prefill(model, inputs)
    pruned, report = _prefill(model, inputs, "plphp", start_layer=0)
    assert [layer.pruned for layer in report.layers] == [not s for s in sliding]
    for idx, is_sliding in enumerate(sliding):
        mine, theirs = pruned.past_key_values.layers[idx], plain.past_key_values.layers[idx]
        if is_sliding:
            # the window's keys only (shorter than the prompt), bit for bit the unpruned ones
            assert mine.keys.shape[-2] == config.sliding_window - 1 < inputs["input_ids"].shape[1]
            assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
        else:
            assert mine.keys.shape[-2] < theirs.keys.shape[-2]


@pytest.mark.parametrize("materialize", ["prune", "mask"])
def test_gemma3_bidirectional_prefill_attention_is_unchanged(materialize):
    vlm = tiny_vlm("gemma3")
    model, inputs = vlm.model, vlm.inputs["batch3"]
    plain, _ = _prefill(model, inputs)
    causal, _ = _prefill(model, {k: v for k, v in inputs.items() if k != "token_type_ids"})
    valid = inputs["attention_mask"].bool()
    assert (plain.logits - causal.logits)[valid].abs().max() > 1e-3, "the image blocks must attend both ways"
    pruned, report = _prefill(model, inputs, "plphp", start_layer=0, materialize=materialize)
    assert any(layer.pruned for layer in report.layers)
    assert torch.equal(pruned.logits, plain.logits), "every position's prefill logits, image tokens included"


def test_gemma3_refuses_the_prefill_stage():
    with pytest.raises(ConfigError, match=r"use stage 'decode'$") as error:
        plphp.apply(tiny_vlm("gemma3").model, {"preset": "fastv", "start_layer": 3})
    assert "bidirectionally" in str(error.value) and "\n" not in str(error.value)


# -- Mistral 3 -------------------------------------------------------------------------------------


def test_mistral3_break_and_end_tokens_are_text_and_an_image_is_one_segment():
    vlm = tiny_vlm("mistral3")
    inputs = vlm.inputs["batch3"]
    tokenizer = vlm.processor.tokenizer
    ids = inputs["input_ids"]
    adapter = _adapter(vlm.model)
    vision = adapter.vision_mask(ids) & inputs["attention_mask"].bool()
    breaks = ids == tokenizer.convert_tokens_to_ids("[IMG_BREAK]")
    ends = ids == tokenizer.convert_tokens_to_ids("[IMG_END]")
    assert breaks.any() and not (vision & (breaks | ends)).any()
    segments = adapter.segment_ids(ids, vision)
    step = vlm.model.config.vision_config.patch_size * vlm.model.config.spatial_merge_size
    sizes = [(int(h) // step, int(w) // step) for h, w in inputs["image_sizes"]]
    image = 0
    for b, count in enumerate([2, 1, 0]):
        assert int(ends[b].sum()) == count
        for segment in range(count):
            positions = torch.nonzero(segments[b] == segment).flatten()
            rows, cols = sizes[image]
            assert len(positions) == rows * cols
            # one segment spans its rows: the rows - 1 break tokens lie inside it, none outside
            span = slice(int(positions[0]), int(positions[-1]) + 1)
            assert int(breaks[b, span].sum()) == rows - 1
            image += 1
    layouts = adapter.image_layouts(inputs)
    assert [len(sample) for sample in layouts] == [2, 1, 0]
    assert [layout.num_tokens for sample in layouts for _, layout in sample] == [r * c for r, c in sizes]


# -- Qwen3.5 (hybrid) ------------------------------------------------------------------------------


def test_qwen3_5_prunes_only_the_attention_layers():
    vlm = tiny_vlm("qwen3_5")
    model, inputs = vlm.model, vlm.inputs["batch3"]
    layer_types = model.config.text_config.layer_types
    assert layer_types == ["linear_attention", "full_attention", "linear_attention", "full_attention"]
    plain, _ = _prefill(model, inputs)
    pruned, report = _prefill(model, inputs, "plphp", start_layer=0)
    assert [layer.pruned for layer in report.layers] == [kind == "full_attention" for kind in layer_types]
    for idx, kind in enumerate(layer_types):
        mine, theirs = pruned.past_key_values.layers[idx], plain.past_key_values.layers[idx]
        if kind == "linear_attention":  # no KV cache: the recurrent and conv states, untouched
            for states in ("recurrent_states", "conv_states"):
                ours, unpruned = getattr(mine, states), getattr(theirs, states)
                assert ours.keys() == unpruned.keys() and ours
                assert all(torch.equal(ours[k], unpruned[k]) for k in ours)
    with pytest.raises(ConfigError, match="linear.attention.*use stage .decode.$"):
        plphp.apply(model, "fastv")


# -- where vision tokens lie (plphp inspect, the demo) ------------------------------------------------


@pytest.mark.parametrize(("arch", "grids"), [("qwen3_vl", [(6, 4), (4, 6), (6, 8)]), ("gemma3", [(4, 4)] * 3)])
def test_image_layouts_are_grids_over_the_picture(arch, grids):
    """batch3's pictures are 64x96, 96x64 and 128x96 (width x height): Qwen3-VL merges 16x16 pixels
    into a token, Gemma 3 pools its fixed 64x64 input to 4x4."""
    vlm = tiny_vlm(arch)
    layouts = [layout for sample in _adapter(vlm.model).image_layouts(vlm.inputs["batch3"]) for _, layout in sample]
    assert all(layout.on_picture for layout in layouts)
    assert [(layout.tiles[0].rows, layout.tiles[0].cols) for layout in layouts] == grids


def test_plphp_policies_lists_the_new_architectures_from_their_adapters():
    from plphp.catalog import catalog

    listed = catalog()["architectures"]
    for model_class in ("Qwen3VL", "Gemma3", "Mistral3", "Qwen3_5"):
        assert f"{model_class}ForConditionalGeneration" in listed
