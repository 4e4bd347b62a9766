"""The session's public instrumentation seam: which events fire, in what order, with what."""

from __future__ import annotations

import pytest
import torch

import plphp
from plphp.backends.cache import PrunableLayer
from plphp.backends.events import EVENTS, SessionObserver
from plphp.backends.inputs import chat_inputs
from plphp.models import build_tiny_model, build_tiny_processor, make_image

NEW_TOKENS = 4


class Recorder(SessionObserver):
    """Records every event with its main argument."""

    def __init__(self):
        self.events = []

    def on_prefill_start(self, session):
        self.events.append(("on_prefill_start", None))

    def on_prompt(self, session, prompt):
        self.events.append(("on_prompt", prompt))

    def on_collect_start(self, session, layer_idx):
        self.events.append(("on_collect_start", layer_idx))

    def on_layer_stats(self, session, layer_idx, stats):
        self.events.append(("on_layer_stats", (layer_idx, stats)))

    def on_prefill_end(self, session):
        self.events.append(("on_prefill_end", None))

    def on_compress_start(self, session):
        self.events.append(("on_compress_start", None))

    def on_layer_compressed(self, session, layer_idx, layer):
        self.events.append(("on_layer_compressed", (layer_idx, layer.length, layer.nbytes, layer.allocated_nbytes)))

    def on_compress_end(self, session, report):
        self.events.append(("on_compress_end", report))

    def on_decode_step(self, session, batch_size):
        self.events.append(("on_decode_step", batch_size))

    def on_decode_attention(self, session, layer_idx, query, key, attention_mask, scaling):
        self.events.append(("on_decode_attention", (layer_idx, key.shape[-2])))

    def names(self):
        return [name for name, _ in self.events]

    def of(self, name):
        return [value for event, value in self.events if event == name]


@pytest.fixture(scope="module")
def qwen():
    model = build_tiny_model("qwen2_vl", seed=0)
    processor = build_tiny_processor("qwen2_vl")
    inputs = chat_inputs(
        processor,
        [("compare them", [make_image(64, 64, seed=1), make_image(96, 64, seed=2)]), ("what is it", [])],
    )
    return model, inputs


def _generate(model, inputs, policy, observers):
    with torch.inference_mode(), plphp.apply(model, policy, observers=observers) as session:
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return out, session


def test_the_events_of_a_decode_stage_generate_come_in_order_with_their_data(qwen):
    model, inputs = qwen
    recorder = Recorder()
    out, session = _generate(model, inputs, "plphp", [recorder])
    plain, _ = _generate(model, inputs, "plphp", [])
    assert torch.equal(out, plain), "observing changes nothing"
    layers = session.adapter.num_layers
    names = recorder.names()
    prefill = names[: names.index("on_compress_end") + 1]
    assert prefill[:2] == ["on_prefill_start", "on_prompt"]
    assert prefill[2 : 2 + 2 * layers] == ["on_collect_start", "on_layer_stats"] * layers
    assert prefill[2 + 2 * layers : 4 + 2 * layers] == ["on_prefill_end", "on_compress_start"]
    (prompt,) = recorder.of("on_prompt")
    assert prompt.num_vision.tolist() == session.report.num_vision and prompt.num_layers == layers
    assert [idx for idx, _ in recorder.of("on_layer_stats")] == list(range(layers))
    (report,) = recorder.of("on_compress_end")
    assert report is session.report
    compressed = recorder.of("on_layer_compressed")
    pruned = [layer for layer in report.layers if layer.pruned]
    assert [c[0] for c in compressed] == [layer.layer_idx for layer in pruned] and compressed
    for (_, length, nbytes, allocated), layer in zip(compressed, pruned):
        assert length == layer.physical_length and nbytes == layer.kv_bytes_after and allocated > nbytes
    assert recorder.of("on_decode_step") == [2] * (NEW_TOKENS - 1)
    attention = recorder.of("on_decode_attention")
    assert len(attention) == layers * (NEW_TOKENS - 1)
    first_step = dict(attention[:layers])
    for layer in report.layers:  # each layer attends over its own (pruned) cache plus the new token
        assert first_step[layer.layer_idx] == layer.physical_length + 1


def test_a_prompt_without_vision_tokens_has_no_compression_events(qwen):
    model, inputs = qwen
    text_only = {key: inputs[key][1:] for key in ("input_ids", "attention_mask")}
    recorder = Recorder()
    _generate(model, text_only, "plphp", [recorder])
    assert recorder.of("on_prompt") == [None]
    assert not {"on_collect_start", "on_compress_start", "on_compress_end"} & set(recorder.names())


def test_the_prefill_stage_reports_its_shrunk_layers_through_the_same_events(qwen):
    model, inputs = qwen
    recorder = Recorder()
    _, session = _generate(model, inputs, "fastv", [recorder])
    assert recorder.of("on_compress_end") == [session.report]
    assert {c[0] for c in recorder.of("on_layer_compressed")} == {
        layer.layer_idx for layer in session.report.layers if layer.pruned
    }


def test_subscribe_and_unsubscribe(qwen):
    model, inputs = qwen
    recorder = Recorder()
    with torch.inference_mode(), plphp.apply(model, "plphp") as session:
        session.subscribe(recorder)
        model.generate(**inputs, max_new_tokens=2)
        count = len(recorder.events)
        session.unsubscribe(recorder)
        model.generate(**inputs, max_new_tokens=2)
    assert count and len(recorder.events) == count


def test_an_object_with_no_event_is_refused(qwen):
    model, _ = qwen
    with pytest.raises(TypeError, match="none of the session events"):
        plphp.apply(model, "plphp", observers=[object()])


def test_the_events_are_the_observer_base_class_methods():
    assert set(EVENTS) == {name for name in vars(SessionObserver) if name.startswith("on_")}
    assert PrunableLayer().nbytes == 0 and PrunableLayer().allocated_nbytes == 0


def test_the_observer_base_class_is_public():
    assert plphp.SessionObserver is SessionObserver
