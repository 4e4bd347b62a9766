"""Qwen3-VL's timestamped video: every frame its own run of video tokens after its timestamp.

The hand-built prompt is the one `Qwen3VLProcessor` writes; frames group into videos from
`video_grid_thw` or, in `generate()` (which passes no grid), from the outer vision start / end the
processor keeps around a video; and several videos in one sample keep a budget each.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Qwen3VLProcessor
from transformers.video_utils import VideoMetadata

import plphp
from plphp.errors import UnsupportedModelError
from plphp.models import make_image
from plphp.models.video import VIDEO_FPS, make_video, video_chat_inputs
from plphp.ops import kept_count
from plphp.registry import get_registry
from plphp.testing import TinyVLM, check_policy, tiny_vlm

RETENTION = 0.3


@pytest.fixture(scope="module")
def qwen3():
    vlm = tiny_vlm("qwen3_vl")
    return vlm, get_registry().adapter_for(vlm.model)


def _sizes(segments: torch.Tensor) -> list[list[int]]:
    return [[int((row == s).sum()) for s in range(int(row.max()) + 1)] for row in segments]


def test_the_hand_built_prompt_is_the_one_the_processor_writes(qwen3):
    """The text `Qwen3VLProcessor.replace_video_token` puts in place of each video, tokenized whole."""
    vlm, _ = qwen3
    processor = vlm.processor
    videos = [make_video(6, 64, 48, seed=2), make_video(3, 48, 64, seed=3)]
    batch = video_chat_inputs(processor, [("two clips", [make_image(64, 64, seed=1)], videos)])
    # The real method, on a stand-in for the video sub-processor the tiny processor lacks.
    temporal = processor.image_processor.temporal_patch_size
    stand_in = SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=processor.image_processor.merge_size, temporal_patch_size=temporal),
        video_token=processor.video_token,
        vision_start_token=processor.vision_start_token,
        vision_end_token=processor.vision_end_token,
        _calculate_timestamps=processor._calculate_timestamps,
    )
    metadata = [VideoMetadata(len(v), fps=VIDEO_FPS, frames_indices=list(range(len(v)))) for v in videos]
    inputs = {"video_grid_thw": batch["video_grid_thw"], "video_metadata": metadata}
    text = processor.apply_chat_template(
        [
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image"},
                        {"type": "video"},
                        {"type": "video"},
                        {"type": "text", "text": "two clips"},
                    ],
                }
            ]
        ],
        add_generation_prompt=True,
        tokenize=False,
    )[0]
    # The processor refuses video tokens without a video sub-processor: expand by hand, then tokenize.
    replacements = [Qwen3VLProcessor.replace_video_token(stand_in, inputs, index) for index in range(len(videos))]
    images = processor.image_processor([make_image(64, 64, seed=1)])
    pieces = text.split(processor.video_token)
    text = pieces[0] + "".join(r + piece for r, piece in zip(replacements, pieces[1:], strict=True))
    text = text.replace(processor.image_token, processor.replace_image_token(images, 0))
    expected = {"input_ids": processor.tokenizer([text], return_tensors="pt")["input_ids"]}
    expected["mm_token_type_ids"] = torch.tensor(processor.create_mm_token_type_ids(expected["input_ids"]))
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["mm_token_type_ids"], expected["mm_token_type_ids"])
    decoded = processor.tokenizer.decode(batch["input_ids"][0])
    # Frames 0 and 1 at 2 fps make the first temporal patch, stamped at their mean, 0.25 s.
    assert "<|vision_start|><0.2 seconds><|vision_start|><|video_pad|>" in decoded
    assert batch["video_grid_thw"].tolist() == [[3, 6, 8], [2, 8, 6]]


def _layout(adapter, items: list[list[tuple[str, int, int]]], outer: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `input_ids` of samples of ("image", tokens, _) and ("video", frames, tokens per frame),
    laid out as `Qwen3VLProcessor` does (`outer`: with the chat template's start / end around a video),
    and the `video_grid_thw` (tokens per frame as h = 2, w = 2 · tokens)."""
    config = adapter.config
    start, end, text = config.vision_start_token_id, config.vision_end_token_id, 11
    rows, grids = [], []
    for sample in items:
        ids = [text, text]
        for kind, count, per_frame in sample:
            if kind == "image":
                ids += [start] + [config.image_token_id] * count + [end, text]
                continue
            grids.append([count, 2, 2 * per_frame])
            frames = [[text, text, start] + [config.video_token_id] * per_frame + [end] for _ in range(count)]
            ids += ([start] if outer else []) + sum(frames, []) + ([end] if outer else []) + [text]
        rows.append(ids)
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[0] * (width - len(row)) + row for row in rows])
    return input_ids, torch.tensor(grids).view(-1, 3)


_ITEM = st.one_of(
    st.tuples(st.just("image"), st.integers(1, 6), st.just(0)),
    st.tuples(st.just("video"), st.integers(1, 4), st.integers(1, 5)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_ITEM, max_size=4), min_size=1, max_size=3))
def test_frames_group_into_their_videos_with_or_without_the_grid(items):
    adapter = get_registry().adapter_for(tiny_vlm("qwen3_vl").model)
    input_ids, grid = _layout(adapter, items)
    vision = adapter.vision_mask(input_ids)
    with_grid = {"input_ids": input_ids, "video_grid_thw": grid}
    for unit in ("image", "frame"):
        expected = [
            [n for kind, count, per_frame in sample for n in ([count] if kind == "image" else [count * per_frame])]
            if unit == "image"
            else [n for kind, count, per_frame in sample for n in ([count] if kind == "image" else [per_frame] * count)]
            for sample in items
        ]
        for inputs in (with_grid, {"input_ids": input_ids}):
            segments = adapter.prompt_segments(inputs, vision, unit)
            assert _sizes(segments) == expected
            assert bool(((segments >= 0) == vision).all())


def test_frames_outside_an_outer_start_and_end_need_the_grid(qwen3):
    _, adapter = qwen3
    input_ids, grid = _layout(adapter, [[("video", 2, 3), ("video", 3, 3)]], outer=False)
    vision = adapter.vision_mask(input_ids)
    segments = adapter.prompt_segments({"input_ids": input_ids, "video_grid_thw": grid}, vision, "image")
    assert _sizes(segments) == [[6, 9]]
    with pytest.raises(UnsupportedModelError, match=r"^video_grid_thw: .* needs video_grid_thw$"):
        adapter.prompt_segments({"input_ids": input_ids}, vision, "image")
    with pytest.raises(
        UnsupportedModelError,
        match=r"^video_grid_thw: rows \[\[2, 2, 8\], \[3, 2, 8\]\] give frames of \[4, 4, 4, 4, 4\] tokens",
    ):
        adapter.prompt_segments(
            {"input_ids": input_ids, "video_grid_thw": grid + torch.tensor([0, 0, 2])}, vision, "frame"
        )


def test_two_videos_and_an_image_keep_a_budget_each_and_equal_the_masked_reference(qwen3):
    """Left-padded: an image and two videos (written back to back), a video alone, text alone."""
    vlm, adapter = qwen3
    samples = [
        ("all three", [make_image(64, 64, seed=1)], [make_video(4, 64, 48, seed=2), make_video(3, 48, 64, seed=3)]),
        ("one video", [], [make_video(6, 64, 48, seed=4)]),
        ("text only", [], []),
    ]
    batch = video_chat_inputs(vlm.processor, samples)
    vision = adapter.vision_mask(batch["input_ids"]) & batch["attention_mask"].bool()
    assert _sizes(adapter.prompt_segments(dict(batch), vision, "image")) == [[16, 24, 24], [36], []]
    model = vlm.model
    policy = {"segments": "image", "start_layer": 0, "allocator": {"name": "uniform", "retention": RETENTION}}
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.inference_mode():
            with plphp.apply(model, policy) as session:
                pruned = model.generate(**batch, **kwargs)
            with plphp.apply(model, policy, materialize="mask"):
                reference = model.generate(**batch, **kwargs)
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})
    budgets = [sum(kept_count(RETENTION, n) for n in sample) for sample in [[16, 24, 24], [36], []]]
    assert all(layer.budget == budgets for layer in session.report.layers)
    assert torch.equal(pruned.sequences, reference.sequences)
    for a, b in zip(pruned.logits, reference.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("segments", ["image", "frame"])
def test_qwen3_5_takes_the_same_videos(segments):
    """Qwen3.5 uses Qwen3-VL's processor and video layout: the kit's checks hold on its video batch."""
    vlm = tiny_vlm("qwen3_5")
    batch = video_chat_inputs(
        vlm.processor,
        [
            ("describe the picture", [make_image(96, 64, seed=5)], []),
            ("and the video", [], [make_video(6, 64, 48, seed=6)]),
        ],
    )
    mine = TinyVLM("qwen3_5", vlm.model, vlm.processor, {"video": batch})
    (result,) = check_policy("plphp", architectures=[mine], batches=["video"], segments=segments)
    assert result.vision_kv_reduction > 0
