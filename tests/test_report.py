"""The KV-bytes formula of `PruningReport`: the bytes the kept counts need, on padded batches too, and
the conformance kit's byte check built on it still catches wrong bytes."""

from __future__ import annotations

import copy

import pytest

import plphp
from plphp.report import PruningReport, kv_entry_bytes
from plphp.testing import PolicyCheckError, _check_report, _generate, tiny_vlm


@pytest.fixture(scope="module")
def padded():
    """A decode-stage report of the kit's left-padded batch (2, 1 and 0 images), and its inputs."""
    vlm = tiny_vlm("llava")
    policy = plphp.load_policy("plphp", start_layer=1)
    _, report = _generate(vlm.model, vlm.inputs["batch3"], policy, "prune")
    return vlm, policy, report


def test_the_formula_gives_the_real_bytes_of_every_layer_of_a_padded_batch(padded):
    vlm, _, report = padded
    mask = vlm.inputs["batch3"]["attention_mask"]
    text = [int(n) - v for n, v in zip(mask.sum(-1), report.num_vision)]
    config = vlm.model.config.get_text_config()
    entry = kv_entry_bytes(config.hidden_size // config.num_attention_heads, 4)
    assert any(layer.pruned for layer in report.layers) and not all(layer.pruned for layer in report.layers)
    for layer in report.layers:
        assert report.entry_bytes(layer) == entry
        assert report.layer_kv_bytes_formula(layer, text) == layer.kv_bytes_after
        assert report.kv_slots(layer, text) == layer.physical_length
    assert report.kv_bytes_formula(text) == report.kv_bytes_after


def test_per_sample_bytes_count_each_sample_s_own_entries(padded):
    vlm, _, report = padded
    lengths = vlm.inputs["batch3"]["attention_mask"].sum(-1).tolist()
    before, after, kept = report.kv_bytes_per_sample(lengths)
    heads = report.layers[0].kept.shape[1]
    entries = sum(report.entry_bytes(layer) for layer in report.layers)
    assert before == [entries * heads * n for n in lengths]
    assert after[0] < before[0] and after[1] < before[1] and after[2] == before[2]  # the third has no image
    assert 0.0 < kept[0] < 1.0 and kept[2] == 1.0


def test_a_report_without_layers_has_no_formula():
    report = PruningReport("full", "decode", 2, 10, [4, 0], note="no vision tokens")
    assert report.kv_bytes_formula() is None
    assert report.kv_bytes_per_sample([10, 7]) == ([0, 0], [0, 0], [1.0, 1.0])


def test_the_kit_catches_kv_bytes_that_the_kept_counts_do_not_need(padded):
    vlm, policy, report = padded
    inputs = vlm.inputs["batch3"]
    _check_report(report, inputs, policy, vlm.model, "ok")
    wrong = copy.deepcopy(report)
    layer = next(layer for layer in wrong.layers if layer.pruned)
    layer.kv_bytes_after += 2 * 4
    with pytest.raises(PolicyCheckError, match="the tensors need"):
        _check_report(wrong, inputs, policy, vlm.model, "here")
    # The entry size comes from the model, not from the report's own bytes before compression.
    layer.kv_bytes_after -= 2 * 4
    layer.kv_bytes_before *= 2
    _check_report(wrong, inputs, policy, vlm.model, "still ok")
    layer.kv_bytes_after *= 2
    with pytest.raises(PolicyCheckError, match="the tensors need"):
        _check_report(wrong, inputs, policy, vlm.model, "here")
