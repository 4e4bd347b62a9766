"""Adapters: vision masks and the grouping of vision tokens into images."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import CLIPVisionConfig, LlavaConfig, SiglipVisionConfig

from plphp.backends.adapters import ModelAdapter
from plphp.backends.architectures.llava import LlavaAdapter
from plphp.backends.frames import fixed_frames, video_runs
from plphp.errors import UnsupportedModelError

IMAGE, VIDEO = 7, 8


class _Adapter(ModelAdapter):
    def __init__(self, per_image):
        config = SimpleNamespace(image_token_id=IMAGE, video_token_id=VIDEO)
        config.get_text_config = lambda decoder=True: SimpleNamespace()
        super().__init__(SimpleNamespace(config=config))
        self._per_image = per_image

    def tokens_per_image(self):
        return self._per_image


def _reference(ids, per_image):
    """The plain loop: a new image at each run of one vision token id, and every `per_image` tokens."""
    out, image, run, previous = [], -1, 0, None
    for token in ids:
        if token not in (IMAGE, VIDEO):
            out.append(-1)
            previous = None
            continue
        if previous != token or (per_image and run == per_image):
            image, run = image + 1, 0
        out.append(image)
        run += 1
        previous = token
    return out


@given(
    st.lists(
        st.lists(st.sampled_from([1, 2, IMAGE, IMAGE, IMAGE, VIDEO]), min_size=1, max_size=40), min_size=1, max_size=3
    ),
    st.sampled_from([None, 1, 3, 4]),
)
def test_segments_match_the_plain_loop(rows, per_image):
    length = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (length - len(r)) + r for r in rows])
    adapter = _Adapter(per_image)
    vision = adapter.vision_mask(ids)
    assert vision.tolist() == [[t in (IMAGE, VIDEO) for t in row] for row in ids.tolist()]
    got = adapter.segment_ids(ids, vision).tolist()
    assert got == [_reference(row, per_image) for row in ids.tolist()]


@pytest.mark.parametrize(
    ("tower", "strategy", "expected"),
    [("clip", "default", 36), ("clip", "full", 37), ("siglip", "full", 36), ("siglip", "default", 35)],
)
def test_llava_adapter_counts_tokens_per_image_like_the_processor(tower, strategy, expected):
    vision_class = CLIPVisionConfig if tower == "clip" else SiglipVisionConfig
    vision = vision_class(image_size=48, patch_size=8, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    config = LlavaConfig(vision_config=vision, vision_feature_select_strategy=strategy)
    model = type("Model", (), {"config": config})()
    assert LlavaAdapter(model).tokens_per_image() == expected


@given(
    st.lists(
        st.lists(st.sampled_from([1, IMAGE, IMAGE, VIDEO, VIDEO, VIDEO]), min_size=1, max_size=40),
        min_size=1,
        max_size=3,
    ),
    st.integers(1, 5),
)
def test_frame_segments_match_the_plain_loop(rows, per_frame):
    """Under `segments: frame` every video run is cut into `per_frame`-token frames; images stay whole."""

    class _Frames(_Adapter):
        def video_frames(self, inputs, video_mask):
            return fixed_frames(video_mask, per_frame)

    length = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (length - len(r)) + r for r in rows])
    adapter = _Frames(None)
    vision = adapter.vision_mask(ids)
    runs = [len(run) for _, run in video_runs(ids == VIDEO)]
    if any(n % per_frame for n in runs):
        with pytest.raises(UnsupportedModelError, match="whole number"):
            adapter.prompt_segments({"input_ids": ids}, vision, "frame")
        return
    got = adapter.prompt_segments({"input_ids": ids}, vision, "frame").tolist()
    expected = []
    for row in ids.tolist():
        out, segment, run, previous = [], -1, 0, None
        for token in row:
            if token not in (IMAGE, VIDEO):
                out.append(-1)
                previous = None
                continue
            if previous != token or (token == VIDEO and run == per_frame):
                segment, run = segment + 1, 0
            out.append(segment)
            run += 1
            previous = token
        expected.append(out)
    assert got == expected
    assert torch.equal(adapter.prompt_segments({"input_ids": ids}, vision, "image"), adapter.segment_ids(ids, vision))
