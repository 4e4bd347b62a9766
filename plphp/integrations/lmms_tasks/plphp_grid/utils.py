"""The functions of the plphp_grid tasks (lmms-eval loads them by file through `!function utils.<name>`).

Each row of test.jsonl is a row of `plphp eval`'s JSONL format: `id`, `kind`, `question`, `answer`
and `images`, paths relative to this folder, plus `choices` for `plphp_grid_choice`. The prompt is
the one `plphp eval` builds: the pictures, then the question (or the pictures at its `<image>`
markers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from plphp.tasks.scoring import exact_match, token_accuracy

HERE = Path(__file__).resolve().parent
IMAGE_MARKER = "<image>"


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    """The row's pictures, decoded (RGB)."""
    pictures = []
    for path in doc["images"]:
        with Image.open(HERE / path) as image:
            pictures.append(image.convert("RGB"))
    return pictures


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question, as it stands in the row."""
    return doc["question"]


def doc_to_messages(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> list[dict]:
    """One user turn: the pictures, then the question (or the pictures at its `<image>` markers)."""
    pictures = [{"type": "image", "url": picture} for picture in doc_to_visual(doc)]
    question = doc["question"]
    if IMAGE_MARKER not in question:
        return [{"role": "user", "content": [*pictures, {"type": "text", "text": question}]}]
    content: list[dict[str, Any]] = []
    pieces = question.split(IMAGE_MARKER)
    for index, piece in enumerate(pieces):
        if piece.strip():
            content.append({"type": "text", "text": piece})
        if index < len(pieces) - 1:
            content.append(pictures[index])
    return [{"role": "user", "content": content}]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Exact match and per-token accuracy of the answer, as `plphp eval` scores them."""
    prediction = results[0]
    return {
        "exact_match": float(exact_match(prediction, doc["answer"])),
        "token_accuracy": token_accuracy(prediction, doc["answer"]),
    }


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The multiple-choice options (the answer among other answers of its kind)."""
    return list(doc["choices"])


def doc_to_target(doc: dict[str, Any]) -> int:
    """The index of the answer among the options."""
    return doc["choices"].index(doc["answer"])
