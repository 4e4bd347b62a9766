"""Grid scenes: coloured shapes in the cells of a grid, as metadata and as a rendered picture.

A scene is pure metadata (which shape of which colour sits in which cell); `render` draws it
deterministically, so every answer is a function of the metadata and the picture shows exactly it.

Two layouts (`LAYOUTS`): in `cell` scenes each shape fills its cell; in `quadrant` scenes each
shape is drawn small, in one quadrant of its cell (`Scene.spots`), so that the part of the picture
an answer needs is a quarter of the cell: the layout grid model v2 is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
LAYOUTS: tuple[str, ...] = ("cell", "quadrant")
BACKGROUND = (245, 245, 245)
GRID_LINE = (200, 200, 200)


@dataclass(frozen=True)
class Shape:
    """One object: a colour name from `COLORS` and a shape name from `SHAPES`."""

    color: str
    kind: str

    def describe(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """A `rows x cols` grid; `cells` maps (row, column), 1-based, to the shape in that cell.

    Attributes:
        rows: grid rows.
        cols: grid columns.
        size: image width and height in pixels.
        cells: occupied cells; cells not listed are empty.
        spots: for a `quadrant` scene, the quadrant of its cell each shape is drawn in (0 top left,
            1 top right, 2 bottom left, 3 bottom right), for every occupied cell; empty for a
            `cell` scene, whose shapes fill their cells. The answers never depend on it.
    """

    rows: int
    cols: int
    size: int
    cells: dict[tuple[int, int], Shape] = field(default_factory=dict)
    spots: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        """`quadrant` when the shapes are drawn small in one quadrant of their cells, else `cell`."""
        return "quadrant" if self.spots else "cell"

    def find(self, shape: Shape) -> list[tuple[int, int]]:
        """Cells holding `shape`, in reading order."""
        return sorted(cell for cell, held in self.cells.items() if held == shape)

    def row(self, row: int) -> list[Shape | None]:
        """The contents of one row, left to right (None where empty)."""
        return [self.cells.get((row, col)) for col in range(1, self.cols + 1)]

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Pixel box `(x0, y0, x1, y1)` of a cell (x1, y1 exclusive)."""
        x0, x1 = (col - 1) * self.size // self.cols, col * self.size // self.cols
        y0, y1 = (row - 1) * self.size // self.rows, row * self.size // self.rows
        return x0, y0, x1, y1

    def shape_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Pixel box `(x0, y0, x1, y1)` (inclusive) the shape of an occupied cell is drawn in."""
        x0, y0, x1, y1 = self.cell_box(row, col)
        if (row, col) in self.spots:
            quadrant = self.spots[(row, col)]
            half_x, half_y = (x1 - x0) // 2, (y1 - y0) // 2
            x0, y0 = x0 + (quadrant % 2) * half_x, y0 + (quadrant // 2) * half_y
            x1, y1 = x0 + half_x, y0 + half_y
        margin = max(2, (x1 - x0) // 6)
        return x0 + margin, y0 + margin, x1 - 1 - margin, y1 - 1 - margin

    def render(self) -> Image.Image:
        """Draw the scene: light background, thin grid lines, one filled shape per occupied cell."""
        image = Image.new("RGB", (self.size, self.size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for index in range(1, self.cols):
            x = index * self.size // self.cols
            draw.line([(x, 0), (x, self.size - 1)], fill=GRID_LINE)
        for index in range(1, self.rows):
            y = index * self.size // self.rows
            draw.line([(0, y), (self.size - 1, y)], fill=GRID_LINE)
        for (row, col), shape in sorted(self.cells.items()):
            box = self.shape_box(row, col)
            fill = COLORS[shape.color]
            if shape.kind == "circle":
                draw.ellipse(box, fill=fill)
            elif shape.kind == "square":
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
        return image

    def to_dict(self) -> dict:
        data = {
            "rows": self.rows,
            "cols": self.cols,
            "size": self.size,
            "cells": [[row, col, shape.color, shape.kind] for (row, col), shape in sorted(self.cells.items())],
        }
        if self.spots:
            data["spots"] = [[row, col, quadrant] for (row, col), quadrant in sorted(self.spots.items())]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        cells = {(row, col): Shape(color, kind) for row, col, color, kind in data["cells"]}
        spots = {(row, col): quadrant for row, col, quadrant in data.get("spots", [])}
        return cls(rows=data["rows"], cols=data["cols"], size=data["size"], cells=cells, spots=spots)


def with_layout(scene: Scene, layout: str, rng: np.random.Generator) -> Scene:
    """`scene` drawn in `layout`: for `quadrant`, a quadrant per occupied cell drawn from `rng`.

    The cells, and so every answer, stay as they are; `cell` takes no draw.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: {layout!r} is not allowed; use one of {LAYOUTS}")
    if layout == "cell":
        return replace(scene, spots={})
    spots = {cell: int(rng.integers(4)) for cell in sorted(scene.cells)}
    return replace(scene, spots=spots)


def random_scene(
    rng: np.random.Generator, rows: int, cols: int, size: int, min_shapes: int = 2, max_shapes: int | None = None
) -> Scene:
    """A scene with between `min_shapes` and `max_shapes` distinct shapes in distinct cells.

    Every (colour, shape) pair appears at most once, so "where is the red circle" has one answer.
    """
    max_shapes = min(max_shapes or (rows * cols + 1) // 2, rows * cols, len(COLORS) * len(SHAPES))
    count = int(rng.integers(min_shapes, max_shapes + 1))
    all_cells = [(row, col) for row in range(1, rows + 1) for col in range(1, cols + 1)]
    all_shapes = [Shape(color, kind) for color in COLORS for kind in SHAPES]
    cells = [all_cells[i] for i in rng.choice(len(all_cells), size=count, replace=False)]
    shapes = [all_shapes[i] for i in rng.choice(len(all_shapes), size=count, replace=False)]
    return Scene(rows=rows, cols=cols, size=size, cells=dict(zip(cells, shapes)))
