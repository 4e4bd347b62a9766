"""The input stage on tiny models of every architecture: only the kept vision tokens enter the decoder.

The contract (`plphp.testing.check_policy`, which runs it for stage "input"): generation equals the
model run on `inputs_embeds` of the kept (merged) features alone, with the original position ids
passed explicitly (M-RoPE included) or, with `positions: compact`, consecutive ones; pruning equals
the masked reference; text is never dropped and the counts equal the budgets.
"""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.errors import ConfigError, PlphpError
from plphp.models import ARCHITECTURES
from plphp.testing import PolicyCheckError, check_policy, tiny_vlm

#: Architectures whose adapter refuses the input stage, and a word of the reason (their
#: `unprunable_layers("input")`, first layer first): DeepStack indexes the prompt's vision positions;
#: linear-attention and sliding-window layers (and Gemma 3's bidirectional image blocks) need every token.
INPUT_REFUSED = {"qwen3_vl": "DeepStack", "qwen3_5": "linear attention", "gemma3": "sliding-window"}
#: Architectures whose adapter reads no vision-tower statistics: the [CLS]-attention presets are refused.
NO_TOWER = ("mistral3", "internvl", "idefics3", "smolvlm")


def _check_or_refused(architecture, preset, **overrides):
    """The kit's results, or, where the architecture declines the input stage, that it says why in one line."""
    results = check_policy(preset, architectures=[architecture], **overrides)
    if architecture in INPUT_REFUSED:
        assert all(INPUT_REFUSED[architecture] in r.skipped and "\n" not in r.skipped for r in results)
        return []
    assert [r.batch for r in results] == ["batch1", "batch3"] and not any(r.skipped for r in results)
    return results


@pytest.mark.parametrize("positions", ["original", "compact"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_random_input_equals_the_kept_features_reference(architecture, positions):
    results = _check_or_refused(architecture, "random-input", positions=positions)
    assert all(r.vision_kv_reduction > 0.8 for r in results)


@pytest.mark.parametrize("preset", ["pool", "divprune"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_feature_presets_equal_the_kept_features_reference(architecture, preset):
    """Compact positions (the kit's preset matrix, tests/test_testing.py, runs the original ones)."""
    _check_or_refused(architecture, preset, positions="compact")


@pytest.mark.parametrize("preset", ["fastervlm", "visionzip"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tower_presets_equal_the_kept_features_reference(architecture, preset):
    if architecture in NO_TOWER:
        with pytest.raises(PolicyCheckError, match="no vision tower plphp knows"):
            check_policy(preset, architectures=[architecture], positions="compact")
        return
    _check_or_refused(architecture, preset, positions="compact")


def test_an_architecture_that_cannot_take_the_input_stage_refuses_it_in_one_line():
    with pytest.raises(ConfigError, match="DeepStack") as error:
        plphp.apply(tiny_vlm("qwen3_vl").model, "random-input")
    assert "\n" not in str(error.value) and "use stage 'decode'" in str(error.value)


def test_report_says_what_entered_the_decoder():
    vlm = tiny_vlm("qwen2_vl")
    inputs = vlm.inputs["batch3"]
    # Half of each 48-token image: 24 kept, of which round(24 · 10/64) = 4 contextual tokens.
    with plphp.apply(vlm.model, "visionzip", allocator={"retention": 0.5}) as session:
        vlm.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    report = session.report
    assert report.stage == "input"
    entered = report.input_positions
    valid = inputs["attention_mask"].bool()
    vision = session.adapter.vision_mask(inputs["input_ids"]) & valid
    for b in range(entered.shape[0]):
        slots = entered[b][entered[b] >= 0]
        text = (valid[b] & ~vision[b]).nonzero().flatten()
        assert set(text.tolist()) <= set(slots.tolist())  # text never dropped
        assert int(vision[b, slots].sum()) == report.layers[0].budget[b]
    assert report.layers[0].physical_length == entered.shape[1]
    assert report.decoder_tokens == (entered >= 0).sum(-1).tolist() == report.to_dict()["decoder_tokens"]
    assert "entered the decoder" in report.summary()
    merged = report.merge_assignment
    assert bool((merged[vision] >= 0).all())  # VisionZip accounts for every vision token


def test_cls_attention_scores_follow_the_tower():
    """On LLaVA (CLIP) the kept tokens are the patches the [CLS] token attends to most at layer -2."""
    vlm = tiny_vlm("llava")
    inputs = vlm.inputs["batch1"]
    with plphp.apply(vlm.model, "fastervlm", record_scores=True) as session:
        vlm.model.generate(**inputs, max_new_tokens=1, do_sample=False)
    scores = session.report.layers[0].scores[0, 0]
    vision = session.adapter.vision_mask(inputs["input_ids"])[0]
    kept = session.report.layers[0].kept_positions[0, 0]
    top = scores.masked_fill(~vision, float("-inf")).topk(len(kept)).indices.sort().values
    assert torch.equal(kept, top)
    assert bool((scores[vision] > 0).all()) and float(scores[vision].sum()) <= 1.0 + 1e-5


def test_one_line_errors():
    model = tiny_vlm("llava").model
    with pytest.raises(ConfigError, match="collector: 'last_token' serves stage decode/prefill"):
        plphp.load_policy("fastervlm", collector={"name": "last_token"})
    with pytest.raises(ConfigError, match="needs stage 'input'"):
        plphp.load_policy("plphp", merger={"name": "contextual"})
    with pytest.raises(ConfigError, match="selector 'head_topk' chooses per head"):
        plphp.load_policy("fastervlm", selector={"name": "head_topk"})
    with pytest.raises(ConfigError, match="layer: 9 is not a layer of this vision tower"):
        plphp.apply(model, "fastervlm", collector={"layer": 9})
    vlm = tiny_vlm("llava")
    embeds = vlm.model.get_input_embeddings()(vlm.inputs["batch1"]["input_ids"])
    with pytest.raises(PlphpError, match="tower's attention was not seen"), plphp.apply(vlm.model, "fastervlm"):
        vlm.model(input_ids=vlm.inputs["batch1"]["input_ids"], inputs_embeds=None, pixel_values=None)
    del embeds


@pytest.mark.parametrize("architecture", ["llava_next", "llava_onevision"])
def test_anyres_tower_statistics_match_with_and_without_image_sizes(architecture):
    """A forward call hands the input stage `image_sizes` (the model's own `pack_image_features` maps the
    tiles' statistics); `generate()` consumes them, and tokens are matched to their projected patches
    instead: both give the same scores."""
    vlm = tiny_vlm(architecture)
    inputs = vlm.inputs["batch3"]
    scores = {}
    for how in ("forward", "generate"):
        with plphp.apply(vlm.model, "fastervlm", record_scores=True) as session, torch.inference_mode():
            if how == "forward":
                vlm.model(**inputs)
            else:
                vlm.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        scores[how] = session.report.layers[0].scores
    vision = session.adapter.vision_mask(inputs["input_ids"]) & inputs["attention_mask"].bool()
    assert torch.allclose(scores["forward"][:, 0][vision], scores["generate"][:, 0][vision], atol=1e-7)


@pytest.mark.parametrize("architecture", ["llava_next", "llava_onevision"])
def test_anyres_layouts_are_read_off_the_newlines_when_generate_consumed_image_sizes(architecture):
    """Pooling under generate() (no image_sizes) keeps what the adapter's layouts from image_sizes imply."""
    vlm = tiny_vlm(architecture)
    inputs = vlm.inputs["batch3"]
    with plphp.apply(vlm.model, "pool") as session:
        vlm.model.generate(**inputs, max_new_tokens=1, do_sample=False)
    layouts = session.adapter.image_layouts(inputs)  # the processor's batch holds image_sizes
    pooled = [
        sum(
            len({("token", i) if c is None else (c[0], c[1] // 2, c[2] // 2) for i, c in enumerate(layout.cells)})
            for _, layout in sample
        )
        for sample in layouts
    ]
    assert all(layout.on_picture for sample in layouts for _, layout in sample)
    assert session.report.layers[0].budget == pooled


@pytest.mark.parametrize("positions", ["original", "compact"])
@pytest.mark.parametrize(
    ("architecture", "preset"), [("qwen2_vl", "visionzip"), ("qwen2_vl", "pool"), ("llava_next", "fastervlm")]
)
def test_beam_search_and_sampling_equal_the_masked_reference(architecture, preset, positions):
    """generate() encodes the images once and repeats the rows for beams and returned sequences; the
    tower statistics and grids follow the repeated rows, and compact decode positions follow each row."""
    vlm = tiny_vlm(architecture)
    inputs = vlm.inputs["batch3"]
    runs = {}
    for materialize in ("prune", "mask"):
        with plphp.apply(vlm.model, preset, positions=positions, materialize=materialize):
            torch.manual_seed(0)
            beams = vlm.model.generate(**inputs, num_beams=2, num_return_sequences=2, max_new_tokens=4)
            torch.manual_seed(0)
            sampled = vlm.model.generate(**inputs, do_sample=True, max_new_tokens=4)
        runs[materialize] = (beams, sampled)
    assert torch.equal(runs["prune"][0], runs["mask"][0])
    assert torch.equal(runs["prune"][1], runs["mask"][1])


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("architecture", ["llava", "qwen2_5_vl"])
def test_reading_the_tower_leaves_its_output_bitwise_unchanged(architecture, implementation):
    vlm = tiny_vlm(architecture)
    model, inputs = vlm.model, vlm.inputs["batch3"]
    tower = plphp.get_registry().adapter_for(model).vision_tower()
    outputs = []
    handle = tower.register_forward_hook(lambda module, args, output: outputs.append(output.last_hidden_state))
    before = model.config.vision_config._attn_implementation
    model.set_attn_implementation({"vision_config": implementation})
    try:
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=1)
            with plphp.apply(model, "fastervlm"):
                model.generate(**inputs, max_new_tokens=1)
    finally:
        handle.remove()
        model.set_attn_implementation({"vision_config": before})
    assert torch.equal(outputs[0], outputs[1])
