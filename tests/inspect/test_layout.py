"""Where each vision token lies on the picture (`ModelAdapter.image_layout`), on constructed cases
whose position-to-patch layout is known, and against the models' own packing of features."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from plphp.backends.adapters import ModelAdapter
from plphp.backends.architectures.llava import LlavaAdapter, LlavaNextAdapter
from plphp.backends.architectures.qwen2_vl import Qwen2VLAdapter
from plphp.backends.inputs import chat_inputs
from plphp.backends.layout import TokenLayout, anyres_layout, unpadded_grid
from plphp.models import build_tiny_model
from plphp.models.processors import build_tiny_processor
from plphp.registry import get_registry


class _Model:
    def __init__(self, config):
        self.config = config


def _adapter(cls, arch, **overrides):
    from plphp.models.tiny import build_tiny_config

    return cls(_Model(build_tiny_config(arch, **overrides)))


def test_qwen_merged_patches_in_raster_order():
    adapter = _adapter(Qwen2VLAdapter, "qwen2_vl")
    grid = torch.tensor([[1, 6, 8], [1, 4, 4]])  # patches; merged 2x2: a 3 x 4 grid, then 2 x 2
    layout = adapter.image_layout({"image_grid_thw": grid}, 0, 12)
    assert [(t.rows, t.cols) for t in layout.tiles] == [(3, 4)] and layout.on_picture
    assert layout.cells[5] == (0, 1, 1) and layout.cells[11] == (0, 2, 3)
    assert layout.cell_box(5) == pytest.approx((1 / 3, 1 / 4, 2 / 3, 2 / 4))
    second = adapter.image_layout({"image_grid_thw": grid}, 1, 4)
    assert second.cells == ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1))
    assert not adapter.image_layout({"image_grid_thw": grid, "video_grid_thw": grid}, 0, 12).on_picture


def test_qwen_token_k_is_the_merged_block_of_the_processor():
    """The processor's patches of token k come from the picture's block (row, col) the layout names."""
    processor = build_tiny_processor("qwen2_vl")
    picture = Image.new("RGB", (64, 48))  # 4 x 3 merged blocks of 16 px
    for row in range(3):
        for col in range(4):
            picture.paste((20 * col, 60 * row, 0), (16 * col, 16 * row, 16 * col + 16, 16 * row + 16))
    inputs = chat_inputs(processor, [("q", [picture])])
    adapter = _adapter(Qwen2VLAdapter, "qwen2_vl")
    layout = adapter.image_layout(inputs, 0, 12)
    pixels = inputs["pixel_values"].reshape(12, 4, 3, -1)  # [token, merged patches, channel, ...]
    for token, (_, row, col) in enumerate(layout.cells):
        red, green = pixels[token, :, 0].mean(), pixels[token, :, 1].mean()
        # each token's patches share one colour, growing with col (red) and row (green)
        assert float(pixels[token, :, 0].std()) < 1e-4
        assert sorted(layout.cells, key=lambda c: (c[1], c[2]))[token] == (0, row, col)
        if col:
            left = layout.cells.index((0, row, col - 1))
            assert red > pixels[left, :, 0].mean()
        if row:
            up = layout.cells.index((0, row - 1, col))
            assert green > pixels[up, :, 1].mean()


@pytest.mark.parametrize(
    ("arch", "strategy", "first"),
    [("llava", "default", (0, 0, 0)), ("llava", "full", None)],  # CLIP: the CLS token is no patch under full
)
def test_llava_square(arch, strategy, first):
    adapter = _adapter(LlavaAdapter, arch, vision_feature_select_strategy=strategy)
    count = adapter.tokens_per_image()
    layout = adapter.image_layout({}, 0, count)
    assert layout.tiles[0].rows == layout.tiles[0].cols == 6 and layout.num_patches == 36
    assert layout.cells[0] == first and layout.cells[-1] == (0, 5, 5)
    assert not adapter.image_layout({}, 0, count + 1).on_picture  # a count that disagrees: a strip


def test_the_grid_model_is_a_nine_by_nine_square():
    from plphp.models.grid import load_grid_model

    model, processor = load_grid_model()
    adapter = get_registry().adapter_for(model)
    inputs = chat_inputs(processor, [("q", [Image.new("RGB", (96, 96))])])
    ((positions, layout),) = adapter.image_layouts(inputs)[0]
    assert len(positions) == 81 and layout.on_picture and (layout.tiles[0].rows, layout.tiles[0].cols) == (9, 9)


def test_anyres_layout_with_newlines():
    layout = anyres_layout(2, (1, 2), (2, 3))  # base 2x2, then 2 rows of 3 patches, each + newline
    assert layout.cells == (
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1),
        (1, 0, 0), (1, 0, 1), (1, 0, 2), None,
        (1, 1, 0), (1, 1, 1), (1, 1, 2), None,
    )  # fmt: skip
    assert layout.num_patches == 10 and layout.cell_box(7) is None
    assert anyres_layout(2, None, None).cells[-1] is None  # an untiled image: one newline after the base
    assert unpadded_grid((96, 24), (8, 4)) == (8, 2)  # a tall picture on a 2x1 canvas: columns cut
    assert unpadded_grid((96, 40), (8, 4)) == (8, 4)  # less than one column of padding a side: none cut
    assert unpadded_grid((100, 100), (60, 60), max_tiles=9, side=4) == (12, 12)  # OneVision downscales


@pytest.mark.parametrize("arch", ["llava_next", "llava_onevision"])
@pytest.mark.parametrize("sizes", [[(96, 40)], [(40, 96)], [(200, 60)], [(96, 96)], [(40, 96), (64, 64)]])
def test_anyres_layout_matches_the_models_packing(arch, sizes):
    """Features that encode their own (tile, row, col) go through the model's `pack_image_features`;
    the layout names, for every token, the patch whose feature the model put there."""
    model = build_tiny_model(arch, seed=0, num_layers=1)
    processor = build_tiny_processor(arch)
    inputs = chat_inputs(processor, [("q", [Image.new("RGB", size) for size in sizes])])
    adapter = get_registry().adapter_for(model)
    layouts = adapter.image_layouts(inputs)[0]
    assert all(layout.on_picture for _, layout in layouts)
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    tiled = arch == "llava_next" or len(sizes) == 1
    features = []
    for size in inputs["image_sizes"]:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        tiles = image_size_to_num_patches(size, model.config.image_grid_pinpoints, 32) if tiled else 1
        grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1)  # [s, s, 2]
        feature = torch.cat([torch.full((tiles, side, side, 1), 0.0), grid.expand(tiles, -1, -1, -1).float()], -1)
        feature[:, :, :, 0] = torch.arange(tiles, dtype=torch.float)[:, None, None]
        features.append(feature.reshape(tiles, side * side, 3))
    newline = torch.full((3,), -1.0)
    kwargs = {"image_newline": newline}
    if arch == "llava_next":
        kwargs["vision_feature_select_strategy"] = "default"
    packed, lengths = model.model.pack_image_features(features, inputs["image_sizes"], **kwargs)
    for (positions, layout), feature, size in zip(layouts, packed, inputs["image_sizes"]):
        assert layout.num_tokens == len(positions) == feature.shape[0]
        if len(layout.tiles) > 1:
            down, across = _grid_shape(model, size)
            rows, cols = layout.tiles[1].rows, layout.tiles[1].cols
            top, left = (down * side - rows) // 2, (across * side - cols) // 2  # the padding cut off
        for token, cell in enumerate(layout.cells):
            tile, row, col = feature[token].long().tolist()
            if cell is None:
                assert tile == row == col == -1  # a newline token
            elif cell[0] == 0:
                assert (tile, row, col) == (0, cell[1], cell[2])  # the base image
            else:  # the tiles: which tile and patch of the padded canvas sits at this unpadded cell
                canvas_row, canvas_col = cell[1] + top, cell[2] + left
                expected = (
                    1 + (canvas_row // side) * across + canvas_col // side,
                    canvas_row % side,
                    canvas_col % side,
                )
                assert (tile, row, col) == expected


def _grid_shape(model, size):
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    return get_anyres_image_grid_shape(size.tolist(), model.config.image_grid_pinpoints, 32)


def test_an_adapter_without_geometry_gives_a_strip():
    class Plain(ModelAdapter):
        pass

    layout = Plain(_Model(build_tiny_model("llava", seed=0, num_layers=1).config)).image_layout({}, 0, 5)
    assert layout == TokenLayout.strip(5) and not layout.on_picture and layout.num_patches == 5


def test_llava_next_adapter_needs_image_sizes():
    adapter = _adapter(LlavaNextAdapter, "llava_next")
    with pytest.raises(KeyError):
        adapter.image_layout({}, 0, 10)
