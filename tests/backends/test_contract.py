"""The correctness contract (docs/architecture.md) on every supported architecture.

- `full` (retention 1.0): tokens and logits bit-identical to plain `generate()`.
- Pruning ("prune": entries removed from the cache) equals the masked reference ("mask": every
  entry kept, dropped ones masked to −∞ per layer and head) within 1e-5 in float32, for batch 1
  and a batch of 3 with left padding, different image sizes and counts (2, 1 and 0 images), under
  greedy, seeded sampling, beam search and `num_return_sequences=2`. Both runs use the same
  attention implementation (sdpa, or eager), so the difference measures pruning alone: sdpa and
  eager prefill by themselves already differ by up to 7e-6 on logits of magnitude ~5 here.
  The eager pair holds the contract's 1e-5. The sdpa pair gets 3e-5: sdpa's CPU kernels sum in
  a different order with and without a mask, which alone moved logits by up to 1.1e-5 after six
  steps (Qwen2.5-VL, sampling), while the eager pair stayed below 3e-6.
- The prefill stage (`fastv`, and `dart`, which ranks by hidden states and needs no attention
  weights) equals the same masked reference applied to all queries from layer K on: in "mask" mode
  nothing leaves the hidden states, dropped keys are masked for every query.
- Every pruned layer keeps exactly its budget; text is never dropped; KV bytes match the formula
  and the cache tensors.
"""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.models import ARCHITECTURES
from plphp.ops import kept_count
from plphp.testing import _refusal, tiny_vlm

DECODING = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, top_k=0, temperature=1.0),
    "beam": dict(do_sample=False, num_beams=2),
    "return2": dict(do_sample=True, top_k=0, num_return_sequences=2),
}
NEW_TOKENS = 6
TOLERANCE = {"eager": 1e-5, "sdpa": 3e-5}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def bundle(request):
    # The conformance kit's models and inputs: batch1 (one image), batch3 (left padding; 2, 1, 0 images).
    vlm = tiny_vlm(request.param)
    return vlm.architecture, vlm.model, vlm.inputs


def _generate(model, inputs, decoding, seed=0):
    torch.manual_seed(seed)
    with torch.inference_mode():
        return model.generate(
            **inputs,
            **DECODING[decoding],
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            output_logits=True,
            return_dict_in_generate=True,
        )


def _run(model, inputs, decoding, policy=None, materialize="prune", attn="sdpa"):
    model.set_attn_implementation({"text_config": attn})
    try:
        if policy is None:
            return _generate(model, inputs, decoding), None
        with plphp.apply(model, policy, materialize=materialize) as session:
            out = _generate(model, inputs, decoding)
        return out, session.report
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("decoding", list(DECODING))
@pytest.mark.parametrize("inputs_name", ["batch1", "batch3"])
def test_full_is_bit_identical_to_plain_generate(bundle, inputs_name, decoding, attn):
    _, model, inputs = bundle
    plain, _ = _run(model, inputs[inputs_name], decoding, attn=attn)
    full, report = _run(model, inputs[inputs_name], decoding, "full", attn=attn)
    assert torch.equal(plain.sequences, full.sequences)
    for a, b in zip(plain.logits, full.logits):
        assert torch.equal(a, b)
    assert report.kv_bytes_after == report.kv_bytes_before
    assert not any(layer.pruned for layer in report.layers)


@pytest.mark.parametrize(
    "policy",
    [
        "plphp",
        "random",
        {"preset": "plphp", "start_layer": 0, "allocator": {"retention": 0.2, "delta": 0.2}},
        "fastv",
        "dart",
        "adakv",
    ],
    ids=["plphp", "random", "plphp-all-layers", "fastv-prefill-stage", "dart-prefill-stage", "adakv-head-budgets"],
)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("decoding", list(DECODING))
@pytest.mark.parametrize("inputs_name", ["batch1", "batch3"])
def test_pruning_equals_the_masked_reference(bundle, inputs_name, decoding, policy, attn):
    _, model, inputs = bundle
    if refusal := _refusal(model, plphp.load_policy(policy)):
        pytest.skip(f"the architecture refuses this policy (tests/backends/test_architectures.py): {refusal}")
    pruned, report = _run(model, inputs[inputs_name], decoding, policy, attn=attn)
    reference, ref_report = _run(model, inputs[inputs_name], decoding, policy, materialize="mask", attn=attn)
    assert torch.equal(pruned.sequences, reference.sequences)
    # Head-adaptive budgets give every head its own row length, so eager sums in yet another
    # order: measured up to 1.05e-5 after six steps (LLaVA-NeXT, sampling), hence 2e-5 there.
    # Pruning from layer 0 on ("plphp-all-layers") compounds the same float32 noise through every
    # layer: 1.2e-5 in 2 of 2298 logits at step 3 (Qwen2-VL, batch 3, return2), with transformers
    # 5.23 and 5.24 alike on the dependency set of 2026-12; a semantic error shows as ~1e-1.
    all_layers = isinstance(policy, dict) and policy.get("start_layer") == 0
    tolerance = TOLERANCE[attn] * (2 if policy == "adakv" or all_layers else 1)
    for step, (a, b) in enumerate(zip(pruned.logits, reference.logits)):
        torch.testing.assert_close(a, b, atol=tolerance, rtol=0, msg=lambda m, s=step: f"decode step {s}: {m}")
    assert any(layer.pruned for layer in report.layers), "the policy pruned nothing: the test would prove nothing"
    if decoding == "greedy":
        plain, _ = _run(model, inputs[inputs_name], decoding, attn=attn)
        if report.stage == "decode":
            assert torch.equal(plain.logits[0], pruned.logits[0]), "prefill is exact: the first token is unchanged"
        changed = max((a - b).abs().max().item() for a, b in zip(plain.logits[1:], pruned.logits[1:]))
        assert changed > 1e-4, "pruning left every decode step unchanged: the comparison would prove nothing"
    for mine, ref in zip(report.layers, ref_report.layers):
        assert mine.pruned == ref.pruned
        if mine.pruned:
            assert torch.equal(mine.kept_positions, ref.kept_positions)


def _text_counts(inputs, report):
    valid = inputs["attention_mask"].bool()
    return [int(v) - n for v, n in zip(valid.sum(-1), report.num_vision)]


@pytest.mark.parametrize("inputs_name", ["batch1", "batch3"])
def test_budgets_text_and_bytes_after_prefill(bundle, inputs_name):
    _, model, inputs = bundle
    batch = inputs[inputs_name]
    policy = plphp.load_policy("plphp", start_layer=1)
    with plphp.apply(model, policy) as session, torch.inference_mode():
        output = model(**batch, use_cache=True)
    report = session.report
    cache = output.past_key_values
    text = _text_counts(batch, report)
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    prunable = _adapter(model).prunable_layers()
    for layer in report.layers:
        keys = getattr(cache.layers[layer.layer_idx], "keys", None)  # linear attention keeps no keys
        if keys is not None:
            values = cache.layers[layer.layer_idx].values
            assert layer.kv_bytes_after == keys.numel() * keys.element_size() + values.numel() * values.element_size()
        if layer.layer_idx < 1 or not prunable[layer.layer_idx]:
            assert not layer.pruned
            continue
        # every KV head keeps exactly the layer's budget
        assert (layer.kept == torch.tensor(layer.budget)[:, None]).all()
        kept_vision = layer.kept_positions
        assert kept_vision.shape[:2] == (report.batch_size, config.num_key_value_heads)
        # physical slots: the longest row of text + kept vision; text is never dropped
        slots = max(t + k for t, k in zip(text, layer.budget))
        assert keys.shape[-2] == slots == layer.physical_length
        assert layer.kv_bytes_after == 2 * report.batch_size * config.num_key_value_heads * slots * head_dim * 4
    assert 0.0 < report.vision_kv_reduction < 1.0


def test_budget_is_per_image(bundle):
    _, model, inputs = bundle
    batch = inputs["batch3"]
    policy = plphp.load_policy({"allocator": {"name": "uniform", "retention": 0.3}, "start_layer": 0})
    with plphp.apply(model, policy) as session, torch.inference_mode():
        model(**batch, use_cache=True)
    report = session.report
    adapter_segments = _segments(model, batch)
    prunable = _adapter(model).prunable_layers()
    for layer in report.layers:
        if not prunable[layer.layer_idx]:
            assert not layer.pruned
            continue
        for b, sizes in enumerate(adapter_segments):
            assert layer.budget[b] == sum(kept_count(0.3, n) for n in sizes)
            kept = layer.kept_positions[b, 0]
            kept = kept[kept >= 0]
            for image, positions in enumerate(_images(model, batch, b)):
                inside = torch.isin(kept, positions).sum().item()
                assert inside == kept_count(0.3, len(positions)), f"image {image} of sample {b}"


def _segments(model, batch):
    return [[len(positions) for positions in _images(model, batch, b)] for b in range(batch["input_ids"].shape[0])]


def _adapter(model):
    from plphp.registry import get_registry

    return get_registry().adapter_for(model)


def _images(model, batch, b):
    """Per image of sample `b`, its vision positions (Mistral 3's break tokens lie between them)."""
    adapter = _adapter(model)
    ids = batch["input_ids"]
    vision = adapter.vision_mask(ids) & batch["attention_mask"].bool()
    segment_ids = adapter.segment_ids(ids, vision)[b]
    return [torch.nonzero(segment_ids == s).flatten() for s in range(int(segment_ids.max()) + 1)]


def test_images_are_split_into_their_own_segments(bundle):
    arch, model, inputs = bundle
    sizes = _segments(model, inputs["batch3"])
    assert [len(s) for s in sizes] == [2, 1, 0], f"{arch}: {sizes}"


def test_the_compressed_cache_holds_exactly_the_text_and_the_kept_vision_entries(bundle):
    _, model, inputs = bundle
    batch = inputs["batch3"]
    with plphp.apply(model, "full") as session, torch.inference_mode():
        full_cache = model(**batch, use_cache=True).past_key_values
    with plphp.apply(model, "plphp", start_layer=0) as session, torch.inference_mode():
        cache = model(**batch, use_cache=True).past_key_values
    valid = batch["attention_mask"].bool()
    prunable = _adapter(model).prunable_layers()
    for layer in session.report.layers:
        if not prunable[layer.layer_idx]:  # sliding-window and linear-attention layers stay as they were
            assert not layer.pruned
            continue
        keys = cache.layers[layer.layer_idx].keys
        full_keys = full_cache.layers[layer.layer_idx].keys
        slot_valid = cache.layers[layer.layer_idx].valid
        for b in range(keys.shape[0]):
            for h in range(keys.shape[1]):
                kept = layer.kept_positions[b, h]
                text = torch.nonzero(valid[b] & ~_vision(model, batch)[b]).flatten()
                positions = torch.cat([text, kept[kept >= 0]]).sort().values
                n = len(positions)
                torch.testing.assert_close(keys[b, h, :n], full_keys[b, h, positions], rtol=0, atol=0)
                if slot_valid is not None:
                    row = slot_valid[b, min(h, slot_valid.shape[1] - 1)]
                    assert row[:n].all() and not row[n:].any()
                else:
                    assert n == keys.shape[2]


def _vision(model, batch):
    from plphp.registry import get_registry

    return get_registry().adapter_for(model).vision_mask(batch["input_ids"])
