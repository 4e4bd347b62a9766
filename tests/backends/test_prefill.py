"""The shrinking hidden-state sequence of the prefill stage, on hand-made cases and random ones."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import plphp
from plphp.backends.prefill import TokenSequence, gather_slots
from plphp.testing import tiny_vlm


def test_kept_tokens_are_right_aligned_in_prompt_order():
    valid = torch.tensor([[True] * 6, [False, False, True, True, True, True]])
    whole = TokenSequence.whole(valid)
    present = valid & torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 1, 1]], dtype=torch.bool)
    shrunk, source = whole.keep(present, move=True)
    assert shrunk.index.tolist() == [[0, 2, 3, 5], [0, 2, 4, 5]]
    assert shrunk.valid.tolist() == [[True] * 4, [False, True, True, True]]
    assert source[:, 1:].tolist() == [[2, 3, 5], [2, 4, 5]]
    # a second drop maps through the first: sources are slots of the shrunk sequence
    again, source = shrunk.keep(present & torch.tensor([[1, 1, 0, 1, 1, 1]] * 2, dtype=torch.bool), move=True)
    assert again.index.tolist() == [[0, 3, 5], [0, 4, 5]]
    assert source[0].tolist() == [0, 2, 3]  # prompt positions 0, 3, 5 sat in slots 0, 2, 3
    mask = again.attention_mask()
    assert mask.shape == (2, 1, 3, 3)
    assert mask[1, 0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]


@given(st.integers(1, 4), st.integers(1, 30), st.integers(0, 10_000))
def test_keep_then_gather_reads_the_kept_positions(batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    valid = torch.ones(batch, length, dtype=torch.bool)
    for b in range(batch):
        valid[b, : int(torch.randint(0, length, (), generator=generator))] = False
    valid[:, -1] = True
    present = valid & (torch.rand(batch, length, generator=generator) < 0.6)
    present[:, -1] = True  # the last prompt token stays
    hidden = torch.randn(batch, length, 5, generator=generator)
    shrunk, source = TokenSequence.whole(valid).keep(present, move=True)
    moved = gather_slots(hidden, source, 1)
    for b in range(batch):
        kept = torch.nonzero(present[b]).flatten()
        n = len(kept)
        assert torch.equal(moved[b, -n:], hidden[b, kept]) if n else True
        assert shrunk.valid[b].sum() == n and shrunk.valid[b, -n:].all()
    assert torch.equal(moved[:, -1], hidden[:, -1])
    cos = torch.randn(1, length, 4, generator=generator)  # batch-1 RoPE tables broadcast
    gathered = gather_slots(cos, shrunk.index, 1)
    assert torch.equal(gathered[0, -1], cos[0, -1]) and gathered.shape[0] == batch


def test_mask_mode_keeps_every_slot_and_marks_dropped_keys():
    valid = torch.ones(1, 4, dtype=torch.bool)
    shrunk, source = TokenSequence.whole(valid).keep(torch.tensor([[1, 0, 1, 1]], dtype=torch.bool), move=False)
    assert source is None and shrunk.index.tolist() == [[0, 1, 2, 3]]
    assert shrunk.attention_mask()[0, 0, 3].tolist() == [True, False, True, True]


def test_prefill_stage_report_and_cache():
    vlm = tiny_vlm("qwen2_vl")
    inputs = vlm.inputs["batch3"]
    with plphp.apply(vlm.model, "fastv") as session, torch.inference_mode():
        out = vlm.model(**inputs, use_cache=True)
    report = session.report
    assert report.stage == "prefill"
    assert [layer.pruned for layer in report.layers] == [False, False, True, True]
    for layer in report.layers[2:]:
        assert layer.kept[:, 0].tolist() == layer.budget
        assert all(kept <= (n + 1) // 2 + 1 for kept, n in zip(layer.budget, report.num_vision))
        keys = out.past_key_values.layers[layer.layer_idx].keys
        assert keys.shape[-2] == layer.physical_length < report.prompt_length
        assert layer.kv_bytes_after == keys.numel() * keys.element_size() * 2
    assert out.logits.shape[1] <= report.prompt_length  # the sequence shrank inside the model
    assert 0 < report.vision_kv_reduction < 1


def test_a_policy_that_drops_everything_keeps_text_and_generates():
    vlm = tiny_vlm("llava_onevision")
    inputs = vlm.inputs["batch3"]
    with plphp.apply(vlm.model, "vtw", allocator={"after": 0.25}) as session, torch.inference_mode():
        out = vlm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    assert all(int(layer.kept.sum()) == 0 for layer in session.report.layers if layer.pruned)
