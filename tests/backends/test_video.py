"""Video input: a batch mixing an image sample and a video sample, with `segments: image | frame`.

Per-frame budgets are exact (each frame keeps `⌈r · n⌉` of its tokens, per KV head), a whole
video is one segment by default, and pruning equals the masked reference (docs/architecture.md,
"The correctness contract") under greedy decoding, seeded sampling and beam search.
"""

from __future__ import annotations

import math

import pytest
import torch

import plphp
from plphp.errors import UnsupportedModelError
from plphp.models.video import VIDEO_ARCHITECTURES
from plphp.ops import kept_count
from plphp.registry import get_registry
from plphp.testing import TOLERANCE, check_policy, tiny_vlm

DECODING = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_k=0, temperature=1.0),
    "beam": dict(do_sample=False, num_beams=2),
}
RETENTION = 0.3


@pytest.fixture(scope="module", params=VIDEO_ARCHITECTURES)
def video(request):
    vlm = tiny_vlm(request.param)
    return vlm.architecture, vlm.model, vlm.inputs["video"]


def _frame_sizes(arch, model, batch):
    """Per sample, the token count of each image and each video frame, from the model's geometry alone."""
    vision = model.config.vision_config
    if arch == "llava_onevision":  # 2x2 pooling of the tower's grid, one newline after the last frame
        per_frame = math.ceil(vision.image_size // vision.patch_size / 2) ** 2
        frames = batch["pixel_values_videos"].shape[1]
        video = [per_frame] * (frames - 1) + [per_frame + 1]
    elif arch == "llava_next_video":  # average pooling by spatial_pool_stride, no newline
        per_frame = (vision.image_size // vision.patch_size // model.config.spatial_pool_stride) ** 2
        video = [per_frame] * batch["pixel_values_videos"].shape[1]
    else:  # one temporal patch per frame, 2x2 merged patches
        count, height, width = batch["video_grid_thw"][0].tolist()
        video = [height * width // vision.spatial_merge_size**2] * count
    adapter = get_registry().adapter_for(model)
    ids, valid = batch["input_ids"], batch["attention_mask"].bool()
    image = int((adapter.vision_mask(ids)[0] & valid[0]).sum())  # sample 0 holds the image alone
    return [[image], video]


def _run(model, batch, decoding, policy=None, materialize="prune"):
    torch.manual_seed(0)
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, output_logits=True, return_dict_in_generate=True)
    with torch.inference_mode():
        if policy is None:
            return model.generate(**batch, **DECODING[decoding], **kwargs), None
        with plphp.apply(model, policy, materialize=materialize) as session:
            out = model.generate(**batch, **DECODING[decoding], **kwargs)
    return out, session.report


@pytest.mark.parametrize("unit", ["image", "frame"])
def test_every_frame_or_every_video_keeps_its_own_share(video, unit):
    arch, model, batch = video
    sizes = _frame_sizes(arch, model, batch)
    segments = sizes if unit == "frame" else [[sum(s)] for s in sizes]
    policy = {"segments": unit, "start_layer": 0, "allocator": {"name": "uniform", "retention": RETENTION}}
    _, report = _run(model, batch, "greedy", policy)  # generate(): Qwen's frames come from M-RoPE positions
    adapter = get_registry().adapter_for(model)
    vision = adapter.vision_mask(batch["input_ids"]) & batch["attention_mask"].bool()
    for layer in report.layers:
        assert layer.pruned
        for b, sample in enumerate(segments):
            assert layer.budget[b] == sum(kept_count(RETENTION, n) for n in sample)
            positions = vision[b].nonzero().flatten()
            bounds = torch.tensor([0, *sample]).cumsum(0)
            for h in range(layer.kept_positions.shape[1]):
                kept = layer.kept_positions[b, h]
                kept = kept[kept >= 0]
                for index, size in enumerate(sample):
                    span = positions[bounds[index] : bounds[index + 1]]
                    inside = int(torch.isin(kept, span).sum())
                    assert inside == kept_count(RETENTION, size), f"{arch} sample {b} segment {index} head {h}"


def test_frames_from_the_grid_equal_frames_from_the_positions(video):
    """A direct forward passes `video_grid_thw`; `generate()` does not (Qwen2(.5)-VL's frames come from its
    M-RoPE positions then, Qwen3-VL's videos from the outer vision start / end around their frames)."""
    arch, model, batch = video
    policy = {"segments": "frame", "allocator": {"name": "uniform", "retention": RETENTION}}
    with plphp.apply(model, policy) as session, torch.inference_mode():
        model(**batch, use_cache=True)
    forward = session.report
    _, generated = _run(model, batch, "greedy", policy)
    for a, b in zip(forward.layers, generated.layers):
        assert a.budget == b.budget
        assert torch.equal(a.kept.cpu(), b.kept.cpu())


@pytest.mark.parametrize("policy", ["plphp", "snapkv", "fastv"])
@pytest.mark.parametrize("decoding", list(DECODING))
def test_pruning_a_video_batch_equals_the_masked_reference(video, decoding, policy):
    _, model, batch = video
    model.set_attn_implementation({"text_config": "eager"})
    try:
        pruned, report = _run(model, batch, decoding, {"preset": policy, "segments": "frame"})
        reference, _ = _run(model, batch, decoding, {"preset": policy, "segments": "frame"}, "mask")
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})
    assert any(layer.pruned for layer in report.layers)
    assert torch.equal(pruned.sequences, reference.sequences)
    for step, (a, b) in enumerate(zip(pruned.logits, reference.logits)):
        # The kit's tolerance: the pruned layers' grouped decode kernel sums in another order than the
        # reference's eager attention, which moved logits by up to 1.2e-5 on these longer video prompts.
        torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=0, msg=lambda m, s=step: f"decode step {s}: {m}")


def test_full_is_bit_identical_on_a_video_batch(video):
    _, model, batch = video
    plain, _ = _run(model, batch, "sampling")
    full, report = _run(model, batch, "sampling", "full")
    assert torch.equal(plain.sequences, full.sequences)
    assert all(torch.equal(a, b) for a, b in zip(plain.logits, full.logits))
    assert report.kv_bytes_after == report.kv_bytes_before


def test_the_kit_checks_video_batches(video):
    arch, _, _ = video
    results = check_policy("plphp", architectures=[arch], batches=["video"], segments="frame")
    assert [r.batch for r in results] == ["video"] and results[0].vision_kv_reduction > 0


def test_an_adapter_without_frames_refuses_segments_frame():
    from plphp.backends.adapters import ModelAdapter

    class NoFrames(ModelAdapter):
        name = "no_frames"

    vlm = tiny_vlm("qwen2_vl")
    batch = vlm.inputs["video"]
    adapter = NoFrames(vlm.model)
    vision = adapter.vision_mask(batch["input_ids"]) & batch["attention_mask"].bool()
    whole = adapter.prompt_segments(dict(batch), vision, "image")
    assert [int(row.max()) + 1 for row in whole] == [1, 1]
    with pytest.raises(UnsupportedModelError, match="segments: 'frame'"):
        adapter.prompt_segments(dict(batch), vision, "frame")
    # An image-only prompt has no frames to split: 'frame' is the same as 'image' there.
    images = vlm.inputs["batch3"]
    vision = adapter.vision_mask(images["input_ids"]) & images["attention_mask"].bool()
    assert torch.equal(
        adapter.prompt_segments(dict(images), vision, "frame"), adapter.prompt_segments(dict(images), vision, "image")
    )


def test_the_segments_field_is_validated_and_described():
    from plphp.errors import ConfigError

    assert plphp.load_policy("plphp").segments == "image"
    policy = plphp.load_policy("plphp", segments="frame")
    assert policy.segments == "frame" and "segments=frame" in policy.describe()
    with pytest.raises(ConfigError, match=r"policy\.segments: .*'image' or 'frame'"):
        plphp.load_policy("plphp", segments="frames")


def test_a_sample_with_an_image_and_a_video_next_to_a_text_only_sample(video):
    """Left-padded batch of three: image + video, video alone, text alone; per-frame budgets, masked reference."""
    from plphp.models import make_image
    from plphp.models.video import make_video, video_chat_inputs

    arch, model, _ = video
    samples = [
        ("both", [make_image(64, 64, seed=1)], [make_video(4, 64, 48, seed=2)]),
        ("one video", [], [make_video(4, 64, 48, seed=3)]),
        ("text only", [], []),
    ]
    batch = video_chat_inputs(tiny_vlm(arch).processor, samples)
    adapter = get_registry().adapter_for(model)
    vision = adapter.vision_mask(batch["input_ids"]) & batch["attention_mask"].bool()
    segments = adapter.prompt_segments(dict(batch), vision, "frame")
    frames = 2 if arch.startswith("qwen") else 4  # Qwen groups input frames in pairs (temporal_patch_size)
    assert [int(row.max()) + 1 for row in segments] == [1 + frames, frames, 0]
    policy = {"segments": "frame", "start_layer": 1, "allocator": {"name": "uniform", "retention": RETENTION}}
    model.set_attn_implementation({"text_config": "eager"})
    try:
        pruned, report = _run(model, batch, "greedy", policy)
        reference, _ = _run(model, batch, "greedy", policy, "mask")
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})
    sizes = [[int((row == s).sum()) for s in range(int(row.max()) + 1)] for row in segments]
    assert report.layers[1].budget == [sum(kept_count(RETENTION, n) for n in sample) for sample in sizes]
    assert torch.equal(pruned.sequences, reference.sequences)
    for a, b in zip(pruned.logits, reference.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_a_prefill_driven_by_hand_reads_the_video_grid_it_is_given():
    from transformers.cache_utils import DynamicCache

    vlm = tiny_vlm("qwen2_vl")
    batch = vlm.inputs["video"]
    with plphp.apply(vlm.model, "plphp", segments="frame") as session:
        prompt = session.begin_prefill(
            DynamicCache(config=vlm.model.config),
            batch["input_ids"],
            batch["attention_mask"],
            video_grid_thw=batch["video_grid_thw"],
        )
        with pytest.raises(UnsupportedModelError, match="video_grid_thw"):
            session.begin_prefill(DynamicCache(config=vlm.model.config), batch["input_ids"], batch["attention_mask"])
    assert [len(prompt.segments(b)) for b in range(2)] == [1, int(batch["video_grid_thw"][0, 0])]
