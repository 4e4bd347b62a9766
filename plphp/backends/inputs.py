"""Chat inputs: questions with pictures, through the processor's chat template, as one batch.

Every face of plphp (`plphp run`, `plphp demo`, `plphp eval`, the benchmarks, the tests) builds
its model inputs with `chat_inputs`, so that the same question and pictures give the same tokens
whichever path they take.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature


def conversation(question: str, num_images: int, image_marker: str | None = None) -> list[dict[str, Any]]:
    """A one-turn user chat: the images first, then the question.

    Args:
        question: the text of the turn.
        num_images: how many `{"type": "image"}` items the turn holds.
        image_marker: when given and found in `question`, the images go where the markers are
            instead (one image per marker; blank text between markers is dropped).
    """
    if image_marker is None or image_marker not in question:
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": question}]
        return [{"role": "user", "content": content}]
    content: list[dict[str, Any]] = []
    pieces = question.split(image_marker)
    for index, piece in enumerate(pieces):
        if piece.strip():
            content.append({"type": "text", "text": piece})
        if index < len(pieces) - 1:
            content.append({"type": "image"})
    return [{"role": "user", "content": content}]


def chat_inputs(
    processor: Any,
    samples: list[tuple[str, list[Image.Image]]],
    device: str | torch.device = "cpu",
    *,
    image_marker: str | None = None,
) -> BatchFeature:
    """A left-padded batch of one-turn chat prompts, one image placeholder per image.

    Args:
        processor: a processor with a chat template.
        samples: `(question, images)` per sample; samples may hold different numbers of images.
        device: where the tensors go.
        image_marker: see `conversation` (default: the images come first in every sample).
    """
    images = [list(sample_images) for _, sample_images in samples]
    conversations = [
        conversation(question, len(pictures), image_marker) for (question, _), pictures in zip(samples, images)
    ]
    return conversation_inputs(processor, conversations, images, device)


def conversation_inputs(
    processor: Any,
    conversations: list[list[dict[str, Any]]],
    images: list[list[Image.Image]],
    device: str | torch.device = "cpu",
    videos: list[list[Any]] | None = None,
) -> BatchFeature:
    """A left-padded batch of chat conversations (several turns, a system turn, videos).

    Args:
        processor: a processor with a chat template.
        conversations: per sample, its turns in the chat-template format, with one
            `{"type": "image"}` (`{"type": "video"}`) item per picture (video).
        images: per sample, its pictures in the order of its image items.
        device: where the tensors go.
        videos: per sample, its videos (frames or whatever the processor takes), in order.
    """
    texts = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "padding_side": "left", "return_tensors": "pt"}
    if any(images):
        kwargs["images"] = images
    if videos and any(videos):
        kwargs["videos"] = videos
    return processor(**kwargs).to(device)
