"""Attention recall: 1.0 for full, the hand-computed share, in [0, 1], and no effect on the tokens."""

from __future__ import annotations

import math

import pytest
import torch

from plphp.backends import tiny
from plphp.backends.recall import RecallMeter, dropped_positions, kept_attention_share, measure_recall, recall_for
from plphp.backends.session import apply
from plphp.policy import load_policy
from plphp.registry import get_registry

GENERATE = {"max_new_tokens": 6, "do_sample": False}


def test_kept_share_by_hand_with_grouped_query_heads():
    # keys 0, ln 2, ln 3 under query 1 -> softmax 1/6, 2/6, 3/6; a zero query -> 1/3 each.
    key = torch.tensor([0.0, math.log(2), math.log(3)]).reshape(1, 1, 3, 1)
    query = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)  # two query heads share the one KV head
    dropped = torch.tensor([False, False, True]).reshape(1, 1, 3)
    share = kept_attention_share(query, key, dropped, None, scaling=1.0)
    assert torch.allclose(share, torch.tensor([[1 - 3 / 6, 1 - 1 / 3]]))
    visible = torch.tensor([False, True, True]).reshape(1, 1, 1, 3)  # e.g. left padding at 0
    share = kept_attention_share(query, key, dropped, visible, scaling=1.0)
    assert torch.allclose(share, torch.tensor([[1 - 3 / 5, 1 - 1 / 2]]))
    additive = torch.tensor([torch.finfo(torch.float32).min, 0.0, 0.0]).reshape(1, 1, 1, 3)
    assert torch.allclose(kept_attention_share(query, key, dropped, additive, scaling=1.0), share)
    nothing = torch.zeros(1, 1, 3, dtype=torch.bool)
    assert torch.equal(kept_attention_share(query, key, nothing, None, scaling=1.0), torch.ones(1, 2))


@pytest.fixture(scope="module")
def eager_model():
    return tiny.build_tiny_model("llava_onevision", seed=1, num_layers=4, attn_implementation="eager")


@pytest.fixture(scope="module")
def batch():
    processor = tiny.build_tiny_processor("llava_onevision")
    samples = [
        ("describe the two pictures", [tiny.make_image(96, 64, seed=1), tiny.make_image(64, 96, seed=2)]),
        ("what is shown", [tiny.make_image(64, 64, seed=3)]),
    ]
    return tiny.make_inputs(processor, samples)


def test_recall_equals_the_share_of_the_models_own_attention_weights(eager_model, batch):
    """Batch of two with left padding, GQA (4 query / 2 KV heads): the observer's per-step recall
    equals 1 - (mass on dropped positions) computed from the eager model's returned attentions."""
    model = eager_model
    with torch.inference_mode():
        with apply(model, "plphp", start_layer=1) as session:
            model.generate(**batch, max_new_tokens=1, do_sample=False)
        adapter = get_registry().adapter_for(model)
        masks = dropped_positions(session.report, adapter.vision_mask(batch["input_ids"]), batch["attention_mask"])
        assert masks[0] is None and all(m is not None and m.any() for m in masks[1:])
        meter = RecallMeter({"plphp": masks})
        with apply(model, "full", observers=[meter]):
            measured = model.generate(**batch, **GENERATE)
        plain = model.generate(**batch, **GENERATE, output_attentions=True, return_dict_in_generate=True)
    assert torch.equal(measured, plain.sequences)
    per_step = meter.results["plphp"].per_step  # [T, B, layers, H]
    results, via_reports = recall_for(model, batch, {"plphp": session.report, "unpruned": None}, **GENERATE)
    assert torch.equal(via_reports, plain.sequences) and list(results) == ["plphp"]
    assert torch.equal(results["plphp"].per_step, per_step), "the one entry point measures the same"
    decode_steps = plain.attentions[1:]  # step 0 is prefill
    assert per_step.shape == (len(decode_steps), 2, 4, 4)
    groups = 2
    for t, layers in enumerate(decode_steps):
        for layer_idx, weights in enumerate(layers):  # [B, H, 1, kv]
            if masks[layer_idx] is None:
                assert torch.equal(per_step[t, :, layer_idx], torch.ones(2, 4))
                continue
            dropped = masks[layer_idx].repeat_interleave(groups, dim=1)  # [B, H, L]
            on_dropped = (weights[:, :, 0, : dropped.shape[-1]] * dropped).sum(-1)
            torch.testing.assert_close(per_step[t, :, layer_idx], 1 - on_dropped, atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra", [{}, {"num_beams": 2}], ids=["greedy", "beams"])
def test_full_is_one_pruning_is_below_and_tokens_are_unchanged(eager_model, batch, extra):
    model = eager_model
    with torch.inference_mode():
        plain = model.generate(**batch, **GENERATE, **extra)
        full, full_report, full_out = measure_recall(model, "full", batch, **GENERATE, **extra)
        pruned, report, pruned_out = measure_recall(
            model, load_policy("plphp", start_layer=0), batch, **GENERATE, **extra
        )
    assert torch.equal(full_out, plain) and torch.equal(pruned_out, plain)
    assert full.overall() == 1.0 and bool((full.per_step == 1.0).all())
    assert report.vision_kv_reduction > 0.5
    assert bool(((pruned.per_step >= 0) & (pruned.per_step <= 1)).all())
    assert 0.0 < pruned.overall() < 1.0
    assert pruned.per_layer().shape == (4,) and bool((pruned.per_layer() < 1).all())
    torch.testing.assert_close(pruned.per_layer_head().mean(-1), pruned.per_layer())


def test_full_masks_measure_exactly_one(eager_model, batch):
    model = eager_model
    with torch.inference_mode(), apply(model, "full") as session:
        model.generate(**batch, max_new_tokens=1)
    nothing = [torch.zeros(2, 2, batch["input_ids"].shape[1], dtype=torch.bool) for _ in session.report.layers]
    meter = RecallMeter({"full": nothing})
    with torch.inference_mode(), apply(model, "full", observers=[meter]):
        model.generate(**batch, **GENERATE)
    assert bool((meter.results["full"].per_step == 1.0).all())


def test_sdpa_and_eager_models_measure_the_same_recall(eager_model, batch):
    sdpa_model = tiny.build_tiny_model("llava_onevision", seed=1, num_layers=4, attn_implementation="sdpa")
    policy = load_policy("plphp", start_layer=1)
    with torch.inference_mode():
        eager, _, eager_out = measure_recall(eager_model, policy, batch, **GENERATE)
        sdpa, _, sdpa_out = measure_recall(sdpa_model, policy, batch, **GENERATE)
    assert torch.equal(eager_out, sdpa_out)
    torch.testing.assert_close(sdpa.per_step, eager.per_step, atol=1e-5, rtol=0)
