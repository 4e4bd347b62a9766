"""Deterministic pictures for tests and demos."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Draws a deterministic RGB picture: a coloured background with a few coloured rectangles.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        seed: Seed of the colours and positions.

    Returns:
        A PIL image of mode "RGB".
    """
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image
