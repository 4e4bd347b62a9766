"""Video inputs for the tiny models, built by hand as the real video processors build them.

transformers' video processors need torchvision, which plphp does not use. `video_chat_inputs` does
what they do for the architectures here: each frame resized and normalized as the architecture's
video processor does, `pixel_values_videos` (and Qwen's `video_grid_thw`) laid out as the model
reads them, and each video placeholder expanded to the video's token count before the real
processor tokenizes the text and handles the images (so `mm_token_type_ids` marks the video tokens).
Qwen3-VL's processor writes each frame as its own `<t seconds><|vision_start|> tokens <|vision_end|>`
inside the chat template's `<|vision_start|> ... <|vision_end|>`; its videos are laid out so too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from plphp.models.images import make_image

#: Frames per second a hand-built video is sampled at (Qwen2.5-VL's `second_per_grid_ts` follows).
VIDEO_FPS = 2.0
#: Tiny architectures that take video input (`video_chat_inputs`).
VIDEO_ARCHITECTURES: tuple[str, ...] = ("llava_onevision", "qwen2_vl", "qwen2_5_vl", "llava_next_video", "qwen3_vl")


def make_video(num_frames: int, width: int, height: int, seed: int = 0) -> list[Image.Image]:
    """A deterministic clip: `num_frames` pictures of `make_image`, each with its own seed."""
    return [make_image(width, height, seed=seed * 1000 + frame) for frame in range(num_frames)]


def _normalized(frames: list[Image.Image], width: int, height: int, processor: Any) -> torch.Tensor:
    """`[F, 3, height, width]` float32: resized (bicubic), rescaled to [0, 1] and normalized."""
    images = processor.image_processor
    mean = torch.tensor(images.image_mean)[:, None, None]
    std = torch.tensor(images.image_std)[:, None, None]
    pixels = [
        torch.from_numpy(np.asarray(frame.convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.float32))
        for frame in frames
    ]
    return (torch.stack(pixels).permute(0, 3, 1, 2) / 255.0 - mean) / std


def _qwen_video(frames: list[Image.Image], processor: Any, layout: str) -> tuple[torch.Tensor, list[int], int]:
    """Qwen's video layout: frames grouped by `temporal_patch_size`, patches merged `merge_size²`.

    Qwen2(.5)-VL resize each frame as an image; Qwen3-VL's video processor resizes the clip as a whole
    (its `smart_resize` bounds frames × height × width), with the image processor's patches and sizes.

    Returns:
        `[t·h·w, C·tp·p·p]` patches, the grid `[t, h, w]`, and the video's token count `t·h·w / m²`.
    """
    images = processor.image_processor
    patch, merge, temporal = images.patch_size, images.merge_size, images.temporal_patch_size
    width, height = frames[0].size
    bounds = dict(factor=patch * merge, min_pixels=images.size["shortest_edge"], max_pixels=images.size["longest_edge"])
    if layout == "qwen3":
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        new_height, new_width = smart_resize(len(frames), height, width, temporal_factor=temporal, **bounds)
    else:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        new_height, new_width = smart_resize(height, width, **bounds)
    video = _normalized(frames, new_width, new_height, processor)
    if pad := -len(frames) % temporal:  # the last frame repeats, as the video processor does
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    grid_t, grid_h, grid_w = video.shape[0] // temporal, new_height // patch, new_width // patch
    channels = video.shape[1]
    patches = video.view(grid_t, temporal, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channels * temporal * patch * patch)
    return flat, [grid_t, grid_h, grid_w], grid_t * grid_h * grid_w // merge**2


def qwen3_video_placeholder(processor: Any, num_frames: int, grid: list[int], video_pad: str) -> str:
    """The text Qwen3-VL's processor puts in place of one video's `<|video_pad|>`, `video_pad` standing
    for each frame's run of video tokens: per frame (temporal patch) its timestamp, then the frame framed
    by vision start / end (`Qwen3VLProcessor.replace_video_token`, for frames sampled at `VIDEO_FPS`)."""
    temporal = processor.image_processor.temporal_patch_size
    seconds = processor._calculate_timestamps(list(range(num_frames)), VIDEO_FPS, temporal)
    start, end = processor.vision_start_token, processor.vision_end_token
    return "".join(f"<{seconds[frame]:.1f} seconds>{start}{video_pad}{end}" for frame in range(grid[0]))


def _pooled_video(frames: list[Image.Image], processor: Any, tokens_per_frame: int, trailer: int) -> tuple:
    """A LLaVA-style video: every frame at the tower's square size, `tokens_per_frame` tokens each."""
    size = processor.image_processor.size
    side = size.get("height") or size.get("shortest_edge")
    return _normalized(frames, side, side, processor), len(frames) * tokens_per_frame + trailer


def _video_layout(processor: Any) -> str:
    name = type(processor).__name__
    if "Qwen3VL" in name:
        return "qwen3"
    if "Qwen2" in name:
        return "qwen"
    if "Onevision" in name:
        return "onevision"
    if "LlavaNextVideo" in name:
        return "llava_next_video"
    raise TypeError(
        f"processor: {name} has no hand-built video inputs; supported are Qwen2(.5)-VL, "
        "Qwen3-VL, LLaVA-OneVision and LLaVA-NeXT-Video"
    )


def _frame_tokens(processor: Any, layout: str) -> tuple[int, int]:
    """Tokens per frame and after the last frame, as the LLaVA processors count them."""
    if layout == "onevision":
        pooled = math.ceil(math.isqrt(processor.num_image_tokens) / 2)  # 2x2 bilinear pooling, rounded up
        return pooled * pooled, 1  # and one newline token after the last frame
    side = processor.image_processor.size.get("height") or processor.image_processor.size["shortest_edge"]
    return (side // processor.patch_size) ** 2 // 4, 0  # 2x2 average pooling (spatial_pool_stride 2)


_SENTINEL = "\x00"


def _expand_videos(batch: BatchFeature, processor: Any, per_sample_tokens: list[list[int]]) -> None:
    """Put `count` video tokens in place of each sentinel (one per video, or per Qwen3-VL frame), sample by
    sample, and pad on the left again."""
    tokenizer = processor.tokenizer
    (sentinel,) = tokenizer(_SENTINEL, add_special_tokens=False)["input_ids"]
    video_id = tokenizer.convert_tokens_to_ids(processor.video_token)
    rows = []
    for ids, valid, counts in zip(batch["input_ids"], batch["attention_mask"], per_sample_tokens, strict=True):
        ids = ids[valid.bool()].tolist()
        if ids.count(sentinel) != len(counts):
            raise ValueError(f"the prompt holds {ids.count(sentinel)} video placeholders for {len(counts)} runs")
        expanded, videos = [], iter(counts)
        for token in ids:
            expanded.extend([video_id] * next(videos) if token == sentinel else [token])
        rows.append(expanded)
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    batch["input_ids"] = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    batch["attention_mask"] = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    if "mm_token_type_ids" in batch:
        batch["mm_token_type_ids"] = torch.tensor(processor.create_mm_token_type_ids(batch["input_ids"]))


def video_chat_inputs(
    processor: Any,
    samples: list[tuple[str, list[Image.Image], list[list[Image.Image]]]],
    device: str | torch.device = "cpu",
) -> BatchFeature:
    """A left-padded batch of one-turn chat prompts with images and videos.

    Args:
        processor: a tiny model's processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision or
            LLaVA-NeXT-Video).
        samples: `(question, images, videos)` per sample, a video being a list of frames (all videos of
            one batch have the same frame count and frame size under the LLaVA layouts); the images
            come first in the turn, then the videos, then the question.
        device: where the tensors go.

    Returns:
        The processor's batch plus `pixel_values_videos` (and `video_grid_thw`, `second_per_grid_ts`
        for Qwen2.5-VL), with every video placeholder expanded to its token count (Qwen3-VL: to its
        frames and timestamps) and `mm_token_type_ids` where the processor makes them.
    """
    layout = _video_layout(processor)
    conversations, per_sample_tokens, per_sample_text, pixels, grids = [], [], [], [], []
    for question, images, videos in samples:
        content = [{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
        conversations.append([{"role": "user", "content": [*content, {"type": "text", "text": question}]}])
        counts, placeholders = [], []
        for frames in videos:
            if layout in ("qwen", "qwen3"):
                flat, grid, count = _qwen_video(frames, processor, layout)
                grids.append(grid)
            else:
                flat, count = _pooled_video(frames, processor, *_frame_tokens(processor, layout))
            pixels.append(flat)
            if layout == "qwen3":  # one run of video tokens per frame, between timestamps
                placeholders.append(qwen3_video_placeholder(processor, len(frames), grid, _SENTINEL))
                counts.extend([count // grid[0]] * grid[0])
            else:
                placeholders.append(_SENTINEL)
                counts.append(count)
        per_sample_tokens.append(counts)
        per_sample_text.append(placeholders)
    texts = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    # The processor refuses video placeholders without a video processor: each video's placeholder
    # becomes one-token sentinels (a byte the tiny tokenizers keep whole) for its runs of video tokens,
    # with Qwen3-VL's timestamps around them, and the sentinels are expanded after tokenization.
    for index, placeholders in enumerate(per_sample_text):
        for placeholder in placeholders:
            texts[index] = texts[index].replace(processor.video_token, placeholder, 1)
    images = [list(sample_images) for _, sample_images, _ in samples]
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "padding_side": "left", "return_tensors": "pt"}
    if any(images):
        kwargs["images"] = images
    batch = processor(**kwargs)
    _expand_videos(batch, processor, per_sample_tokens)
    if pixels:
        if layout in ("qwen", "qwen3"):
            batch["pixel_values_videos"] = torch.cat(pixels)
            batch["video_grid_thw"] = torch.tensor(grids)
            if "2_5" in type(processor).__name__:
                temporal = processor.image_processor.temporal_patch_size
                batch["second_per_grid_ts"] = torch.tensor([temporal / VIDEO_FPS] * len(grids))
        else:
            batch["pixel_values_videos"] = torch.stack(pixels)
    return batch.to(device)
