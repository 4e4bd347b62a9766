"""Sessions outside `generate()`: a plain forward (with gradients on), scoring a continuation on the
pruned cache (what likelihood-based benchmarks do), and full logits under the prefill stage."""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.backends.compat import cache_argument, output_cache
from plphp.backends.inputs import chat_inputs
from plphp.errors import PlphpError
from plphp.models import build_tiny_model, build_tiny_processor, make_image
from plphp.ops import scatter_mask

CONTINUATION = 4
TOLERANCE = 2e-5  # float32, eager: as plphp.testing


@pytest.fixture(scope="module", params=["llava", "llava_next", "llava_onevision"])
def case(request):
    arch = request.param
    model = build_tiny_model(arch, seed=0, attn_implementation="eager")
    processor = build_tiny_processor(arch)
    inputs = chat_inputs(
        processor,
        [("compare the two", [make_image(64, 96, seed=2), make_image(96, 64, seed=3)]), ("what", [make_image(64, 64)])],
    )
    return arch, model, inputs


def _score(model, inputs, policy, materialize, grad=False):
    """Prefill the context, then one forward over a continuation on the (pruned) cache."""
    batch = inputs["input_ids"].shape[0]
    continuation = torch.arange(10, 10 + CONTINUATION).expand(batch, -1)
    mask = torch.cat([inputs["attention_mask"], torch.ones(batch, CONTINUATION, dtype=torch.long)], 1)
    with torch.set_grad_enabled(grad), plphp.apply(model, policy, materialize=materialize) as session:
        prefill = model(**inputs, use_cache=True)
        cache = {cache_argument(model.forward): output_cache(prefill)}
        scored = model(input_ids=continuation, attention_mask=mask, use_cache=True, **cache)
    return prefill.logits, scored.logits, session.report


def test_a_continuation_scored_on_the_pruned_cache_equals_the_masked_reference(case):
    _, model, inputs = case
    policy = plphp.load_policy("plphp", start_layer=1)
    prefill, pruned, report = _score(model, inputs, policy, "prune")
    _, masked, _ = _score(model, inputs, policy, "mask")
    assert report.vision_kv_reduction > 0.3
    assert pruned.shape[1] == CONTINUATION
    assert float((pruned - masked).abs().max()) <= TOLERANCE
    with torch.no_grad():
        plain = model(**inputs).logits
    assert torch.equal(prefill, plain), "the decode stage leaves prefill exact"
    unpruned = _score(model, inputs, "full", "prune")[1]
    assert float((pruned - unpruned).abs().max()) > TOLERANCE, "the continuation did see the pruned cache"


def test_a_forward_with_gradients_works_and_backpropagates(case):
    _, model, inputs = case
    prefill, scored, report = _score(model, inputs, "plphp", "prune", grad=True)
    assert prefill.requires_grad and scored.requires_grad and report.vision_kv_reduction > 0.2
    scored.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)
    _, no_grad, _ = _score(model, inputs, "plphp", "prune")
    assert float((scored.detach() - no_grad).abs().max()) <= TOLERANCE


def test_the_prefill_stage_returns_logits_for_every_position_nan_where_the_token_left(case):
    _, model, inputs = case
    with torch.no_grad(), plphp.apply(model, "fastv") as session:
        pruned = model(**inputs).logits
    with torch.no_grad(), plphp.apply(model, "fastv", materialize="mask"):
        masked = model(**inputs).logits
    assert pruned.shape == masked.shape == (*inputs["input_ids"].shape, pruned.shape[-1])
    last = session.report.layers[-1]
    vision = session.report.layers[0].kept_positions  # layer 0 keeps every token (start_layer 2)
    assert vision is None
    kept = scatter_mask(last.kept_positions, pruned.shape[1])[:, 0]
    attention = inputs["attention_mask"].bool()
    adapter = session.adapter
    left = adapter.vision_mask(inputs["input_ids"]) & attention & ~kept
    assert left.any()
    missing = pruned.isnan().all(-1)
    assert torch.equal(missing, left | ~attention), "NaN exactly where a token left (and at padding)"
    present = ~missing
    assert float((pruned[present] - masked[present]).abs().max()) <= TOLERANCE


def test_labels_under_the_prefill_stage_are_refused_in_one_line(case):
    _, model, inputs = case
    with pytest.raises(PlphpError) as caught, torch.no_grad(), plphp.apply(model, "fastv"):
        model(**inputs, labels=inputs["input_ids"])
    assert "\n" not in str(caught.value) and "labels" in str(caught.value) and "decode-stage" in str(caught.value)
