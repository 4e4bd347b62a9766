"""Synthetic tasks: deterministic by seed, answers from the metadata, pictures that show the metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from plphp.tasks import (
    COLORS,
    KINDS,
    ORDINALS,
    Scene,
    Shape,
    answer_for,
    exact_match,
    make_tasks,
    normalize,
    token_accuracy,
    vocabulary,
    words,
)
from plphp.tasks.scenes import BACKGROUND


def test_same_seed_same_tasks_and_pixels_other_seed_or_split_differs():
    first, again = make_tasks(12, seed=3), make_tasks(12, seed=3)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in again]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for x, y in zip(first, again)
        for a, b in zip(x.images(), y.images())
    )
    assert [t.to_dict() for t in make_tasks(12, seed=4)] != [t.to_dict() for t in first]
    train = make_tasks(12, seed=3, split="train")
    assert [t.to_dict()["scenes"] for t in train] != [t.to_dict()["scenes"] for t in first]


def test_a_longer_list_starts_with_the_shorter_one_and_kinds_take_turns():
    short, long = make_tasks(5, seed=1), make_tasks(15, seed=1)
    assert [t.to_dict() for t in short] == [t.to_dict() for t in long[:5]]
    assert [t.kind for t in long] == [KINDS[i % len(KINDS)] for i in range(15)]


def _cell_color(image: Image.Image, scene: Scene, row: int, col: int) -> tuple[int, int, int]:
    x0, y0, x1, y1 = scene.cell_box(row, col)
    return image.getpixel(((x0 + x1) // 2, (y0 + y1) * 5 // 9))  # a little below the centre: inside a triangle


def _read_scene(image: Image.Image, scene: Scene) -> dict[tuple[int, int], str]:
    """Cell colours read back from the pixels, for an answer check that does not trust the metadata."""
    names = {rgb: name for name, rgb in COLORS.items()}
    cells = {}
    for row in range(1, scene.rows + 1):
        for col in range(1, scene.cols + 1):
            rgb = _cell_color(image, scene, row, col)
            if rgb != BACKGROUND:
                cells[(row, col)] = names[rgb]
    return cells


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_answered_from_the_metadata_and_the_picture_agrees(kind):
    for task in make_tasks(40, seed=7, kinds=[kind]):
        assert task.answer == answer_for(task.kind, task.scenes, task.params)
        pictures = [_read_scene(image, scene) for image, scene in zip(task.images(), task.scenes)]
        colors = [{cell: shape.color for cell, shape in scene.cells.items()} for scene in task.scenes]
        assert pictures == colors  # the picture shows exactly the metadata's cells and colours
        scene, cells = task.scenes[0], task.scenes[0].cells
        p = task.params
        if kind == "locate":
            row, col = (int(w) for w in words(task.answer)[1::2])
            assert cells[(row, col)] == Shape(p["color"], p["shape"])
        elif kind == "identify":
            shape = cells.get((p["row"], p["column"]))
            assert task.answer == (f"{shape.color} {shape.kind}" if shape else "empty")
        elif kind == "count":
            assert int(words(task.answer)[0]) == sum(s.kind == p["shape"] for s in cells.values())
        elif kind == "list_row":
            assert len(task.answer.split(", ")) == scene.cols
            assert task.answer.count("empty") == scene.cols - sum(r == p["row"] for r, _ in cells)
        else:
            assert 2 <= len(task.scenes) <= 4
            hits = [ORDINALS[i] for i, s in enumerate(task.scenes) if Shape(p["color"], p["shape"]) in s.cells.values()]
            assert task.answer == (" ".join(hits) or "none")


def test_answers_have_several_tokens_and_informative_ones_after_the_first():
    tasks = make_tasks(50, seed=0)
    locate = [t for t in tasks if t.kind == "locate"]
    assert all(words(t.answer)[0] == "row" and len(words(t.answer)) == 4 for t in locate)
    assert all(len(words(t.answer)) >= 5 for t in tasks if t.kind == "list_row")
    assert len({t.answer for t in locate}) > 3


def test_small_closed_vocabulary():
    vocab = set(vocabulary())
    assert len(vocab) < 60
    for task in make_tasks(200, seed=11):
        assert set(words(task.question)) | set(words(task.answer)) <= vocab


def test_pictures_render_as_png():
    task = make_tasks(5, seed=2)[4]
    for image in task.images():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        reloaded = Image.open(io.BytesIO(buffer.getvalue()))
        assert reloaded.format == "PNG" and reloaded.size == (96, 96)
        assert np.array_equal(np.asarray(reloaded.convert("RGB")), np.asarray(image))


def test_scene_round_trips_through_a_dict():
    task = make_tasks(1, seed=5)[0]
    assert Scene.from_dict(task.scenes[0].to_dict()) == task.scenes[0]


def test_scoring():
    assert exact_match(" Row 2  column 3.", "row 2 column 3")
    assert not exact_match("row 2 column 3 row", "row 2 column 3")
    assert normalize("Red circle,empty") == "red circle , empty"
    assert token_accuracy("row 2 column 1", "row 2 column 3") == 0.75
    assert token_accuracy("row", "row 2 column 3") == 0.25
    assert token_accuracy("", "none") == 0.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split"):
        make_tasks(1, split="dev")
    with pytest.raises(ValueError, match="kinds"):
        make_tasks(1, kinds=["colour"])
    with pytest.raises(ValueError, match=r"layout: 'small' is not allowed; use one of \('cell', 'quadrant'\)"):
        make_tasks(1, layout="small")


def test_quadrant_layout_keeps_every_question_and_answer_and_draws_each_shape_in_its_quadrant():
    cell, quadrant = make_tasks(60, seed=7), make_tasks(60, seed=7, layout="quadrant")
    assert [(t.question, t.answer, t.params) for t in cell] == [(t.question, t.answer, t.params) for t in quadrant]
    spots = set()
    for task in quadrant:
        for image, scene in zip(task.images(), task.scenes):
            assert scene.layout == "quadrant" and set(scene.spots) == set(scene.cells)
            pixels = np.asarray(image)
            for (row, col), shape in scene.cells.items():
                x0, y0, x1, y1 = scene.cell_box(row, col)
                half = (x1 - x0) // 2
                for q in range(4):  # the shape's colour fills part of its spot and no other quadrant
                    qx, qy = x0 + (q % 2) * half, y0 + (q // 2) * half
                    block = pixels[qy : qy + half, qx : qx + half].reshape(-1, 3)
                    share = (block == COLORS[shape.color]).all(axis=1).mean()
                    assert (share > 0.2) if q == scene.spots[(row, col)] else share == 0
                spots.add(scene.spots[(row, col)])
        assert Scene.from_dict(task.scenes[0].to_dict()) == task.scenes[0]
    assert spots == {0, 1, 2, 3}
    assert all(scene.layout == "cell" and "spots" not in scene.to_dict() for t in cell for scene in t.scenes)
