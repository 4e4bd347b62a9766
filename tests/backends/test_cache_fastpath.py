"""The cache's decode fast path: gather-compress into spare room, and per-layer cached decode masks.

Each is checked against the plain construction it replaces, through decoding steps, growth past the
spare room, beam-search reordering, batch selection, repetition and cropping.
"""

from __future__ import annotations

import pytest
import torch

from plphp.backends.cache import GROWTH, PrunableLayer

B, H_KV, HEADS, L, D = 3, 2, 4, 10, 8


def _reference_mask(layer: PrunableLayer, heads: int, dtype: torch.dtype | None) -> torch.Tensor | None:
    """The one-query mask built from scratch from the layer's validity."""
    valid = layer.valid
    if valid is None:
        return None
    mask = valid[:, :, None, :]
    if mask.shape[1] > 1:
        mask = mask.repeat_interleave(heads // mask.shape[1], dim=1)
    if dtype is None:
        return mask
    return torch.where(mask, torch.zeros((), dtype=dtype), torch.finfo(dtype).min)


def _compressed_layer(per_head: bool) -> tuple[PrunableLayer, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(B, H_KV, L, D, generator=generator)
    values = torch.randn(B, H_KV, L, D, generator=generator)
    layer = PrunableLayer()
    layer.update(keys, values)
    # row lengths differ per sample (and per head when per_head): short rows hold invalid slots
    counts = torch.tensor([[6, 4], [5, 5], [3, 6]]) if per_head else torch.tensor([[6, 6], [4, 4], [5, 5]])
    width = int(counts.max())
    slot_valid = torch.arange(width)[None, None, :] < counts[..., None]
    positions = torch.stack([torch.randperm(L, generator=generator)[:width].sort().values for _ in range(B * H_KV)])
    positions = positions.reshape(B, H_KV, width)
    layer.compress(positions, slot_valid)
    return layer, keys.gather(2, positions[..., None].expand(-1, -1, -1, D)), slot_valid


@pytest.mark.parametrize("per_head", [False, True])
def test_compress_gathers_into_spare_room_so_decoding_appends_in_place(per_head):
    layer, expected_keys, slot_valid = _compressed_layer(per_head)
    width = expected_keys.shape[2]
    assert layer.length == width and layer._key_buffer.shape[2] == width + GROWTH
    torch.testing.assert_close(layer.keys, expected_keys, rtol=0, atol=0)
    rows = slot_valid if per_head else slot_valid[:, :1]
    assert torch.equal(layer.valid, rows)
    pointer = layer._key_buffer.data_ptr()
    new = torch.randn(B, H_KV, 1, D)
    for _ in range(GROWTH):
        layer.update(new, new)
    assert layer._key_buffer.data_ptr() == pointer, "no reallocation within the spare room"
    layer.update(new, new)
    assert layer._key_buffer.data_ptr() != pointer and layer.length == width + GROWTH + 1
    torch.testing.assert_close(layer.keys[:, :, :width], expected_keys, rtol=0, atol=0)
    assert layer.valid[..., width:].all()


@pytest.mark.parametrize("dtype", [None, torch.float32], ids=["bool", "additive"])
@pytest.mark.parametrize("per_head", [False, True])
def test_cached_decode_masks_equal_masks_built_from_scratch(per_head, dtype):
    layer, _, _ = _compressed_layer(per_head)
    new = torch.randn(B, H_KV, 1, D)

    def check():
        mask = layer.attention_mask(1, HEADS, dtype)
        reference = _reference_mask(layer, HEADS, dtype)
        assert mask.shape[-1] == layer.length
        assert torch.equal(mask, reference)

    check()
    for _ in range(3):
        layer.update(new, new)
        check()
    layer.reorder_cache(torch.tensor([2, 0, 1]))
    check()
    layer.update(new, new)
    check()
    layer.batch_select_indices(torch.tensor([0, 2]))
    check()
    layer.batch_repeat_interleave(2)
    check()
    layer.crop(-2)
    check()
    for _ in range(GROWTH + 2):  # past the spare room: the buffers grow and the masks are rebuilt
        layer.update(torch.randn(layer.keys.shape[0], H_KV, 1, D), torch.randn(layer.keys.shape[0], H_KV, 1, D))
    check()


def test_multi_query_masks_stay_causal_among_the_new_queries():
    layer, _, _ = _compressed_layer(per_head=False)
    layer.attention_mask(1, HEADS, None)  # a cached one-query mask must not leak into q > 1
    new = torch.randn(B, H_KV, 3, D)
    layer.update(new, new)
    mask = layer.attention_mask(3, HEADS, None)
    assert mask.shape == (B, 1, 3, layer.length)
    tail = mask[0, 0, :, -3:]
    assert torch.equal(tail, torch.tensor([[True, False, False], [True, True, False], [True, True, True]]))
    assert torch.equal(mask[:, :, -1, :], layer.valid)


def test_a_layer_without_holes_needs_no_decode_mask():
    layer = PrunableLayer()
    keys = torch.randn(B, H_KV, L, D)
    layer.update(keys, keys)
    positions = torch.arange(4).expand(B, H_KV, 4)
    layer.compress(positions, torch.ones(B, H_KV, 4, dtype=torch.bool))
    assert layer.valid is None and layer.attention_mask(1, HEADS, None) is None
