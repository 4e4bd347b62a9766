"""Scoring answers: exact match and per-token accuracy over the task's own tokens (words and punctuation)."""

from __future__ import annotations

from plphp.tasks.generator import words


def normalize(text: str) -> str:
    """Lowercase, one space between tokens, no final full stop."""
    tokens = words(text)
    while tokens and tokens[-1] == ".":
        tokens.pop()
    return " ".join(tokens)


def exact_match(prediction: str, reference: str) -> bool:
    """Whether the normalized prediction equals the normalized reference."""
    return normalize(prediction) == normalize(reference)


def token_accuracy(prediction: str, reference: str) -> float:
    """Share of the reference's tokens that the prediction has at the same position.

    Tokens are words and punctuation marks (`words`), not a model's tokenizer pieces, so figures of
    different models compare. A missing token counts as wrong; extra tokens at the end do not count
    here (exact match sees them).
    """
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not expected:
        return float(not predicted)
    return sum(p == e for p, e in zip(predicted, expected)) / len(expected)
