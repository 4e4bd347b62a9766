"""Where an image's vision tokens lie on the picture: the token layouts adapters return.

A `TokenLayout` describes one image of one sample: its tiles (grids of patches, each placed on
the picture as a box of fractions of its height and width) and, for each of the image's vision
tokens in prompt order, the patch it stands for (`(tile, row, col)`) or None for a token that is
no patch (LLaVA-NeXT / OneVision row newlines, a CLIP tower's CLS token). Adapters build them
(`ModelAdapter.image_layout`); pictures of keep-sets (`plphp inspect`, `plphp demo`) read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The whole picture, as (top, left, bottom, right) fractions of its height and width.
WHOLE = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class TileGrid:
    """One grid of patches: `rows × cols` cells covering `box` of the picture.

    Attributes:
        rows: cells from top to bottom.
        cols: cells from left to right.
        box: (top, left, bottom, right) of the picture the grid covers, in fractions of its size.
        name: what the grid is ("image", "base", "tiles", "strip").
    """

    rows: int
    cols: int
    box: tuple[float, float, float, float] = WHOLE
    name: str = "image"


@dataclass(frozen=True)
class TokenLayout:
    """The vision tokens of one image, mapped to patches.

    Attributes:
        tiles: the grids of patches.
        cells: per vision token of the image (prompt order), `(tile, row, col)`, or None when the
            token is no patch (a row newline, a CLS token).
        on_picture: False when the layout is unknown: one strip of tokens, not placed on the picture.
    """

    tiles: tuple[TileGrid, ...]
    cells: tuple[tuple[int, int, int] | None, ...]
    on_picture: bool = True

    @property
    def num_tokens(self) -> int:
        return len(self.cells)

    @property
    def num_patches(self) -> int:
        """Tokens that stand for a patch."""
        return sum(cell is not None for cell in self.cells)

    def cell_box(self, token: int) -> tuple[float, float, float, float] | None:
        """(top, left, bottom, right) of the patch token `token` stands for, in fractions of the picture."""
        cell = self.cells[token]
        if cell is None:
            return None
        tile, row, col = cell
        grid = self.tiles[tile]
        top, left, bottom, right = grid.box
        height, width = (bottom - top) / grid.rows, (right - left) / grid.cols
        return top + row * height, left + col * width, top + (row + 1) * height, left + (col + 1) * width

    @classmethod
    def strip(cls, count: int) -> TokenLayout:
        """The fallback: `count` tokens in one row, not placed on the picture."""
        return cls((TileGrid(1, max(count, 1), WHOLE, "strip"),), tuple((0, 0, i) for i in range(count)), False)

    @classmethod
    def grid(cls, rows: int, cols: int, name: str = "image", skip_first: bool = False) -> TokenLayout:
        """One `rows × cols` grid over the whole picture, tokens in raster order (`skip_first`: the first
        patch has no token, as when a SigLIP tower's first feature is dropped)."""
        cells = tuple((0, r, c) for r in range(rows) for c in range(cols))
        return cls((TileGrid(rows, cols, WHOLE, name),), cells[1:] if skip_first else cells)


def anyres_layout(
    side: int, tile_grid: tuple[int, int] | None, unpadded: tuple[int, int] | None, newline: bool = True
) -> TokenLayout:
    """The layout of a LLaVA-NeXT / OneVision image: the base image's `side × side` grid first, then
    (when the image is tiled) the tiles' unpadded grid of `unpadded` rows × cols, raster order, with one
    newline token after each row; an untiled image has one newline after its base grid.

    Both grids cover the whole picture: the base image is the picture resized to a square, and the
    tiles' grid, once the processor's padding is cut off, is the picture resized to the best resolution.

    Args:
        side: patches per side of one tile (`image_size // patch_size`).
        tile_grid: `(tiles down, tiles across)`, None for an untiled image.
        unpadded: rows and cols of the tiles' grid after unpadding (and OneVision's downscaling).
        newline: whether the model appends newline tokens (it has an `image_newline`).
    """
    base = TileGrid(side, side, WHOLE, "base")
    cells: list[tuple[int, int, int] | None] = [(0, r, c) for r in range(side) for c in range(side)]
    if tile_grid is None or unpadded is None:
        return TokenLayout((base,), tuple(cells + ([None] if newline else [])))
    rows, cols = unpadded
    for r in range(rows):
        cells.extend((1, r, c) for c in range(cols))
        if newline:
            cells.append(None)
    return TokenLayout((base, TileGrid(rows, cols, WHOLE, "tiles")), tuple(cells))


def unpadded_grid(
    original: Sequence[int], canvas: tuple[int, int], max_tiles: int | None = None, side: int = 1
) -> tuple[int, int]:
    """Rows and cols of an any-resolution feature grid after the padding is cut off, as transformers'
    `unpad_image` computes it, then downscaled as LLaVA-OneVision's `anyres_max_N` does.

    Args:
        original: the picture's (height, width) in pixels.
        canvas: the padded grid's (rows, cols): tiles × patches per side.
        max_tiles: OneVision's N (None: LLaVA-NeXT, no downscaling).
        side: patches per side of one tile (for the downscaling ratio).
    """
    height, width = int(original[0]), int(original[1])
    rows, cols = canvas
    if width / height > cols / rows:
        new_height = int(round(height * (cols / width), 7))
        padding = (rows - new_height) // 2
        rows = rows - 2 * padding
    else:
        new_width = int(round(width * (rows / height), 7))
        padding = (cols - new_width) // 2
        cols = cols - 2 * padding
    if max_tiles is not None:
        ratio = (rows * cols / (max_tiles * side**2)) ** 0.5
        if ratio > 1.1:
            rows, cols = int(rows // ratio), int(cols // ratio)
    return rows, cols
