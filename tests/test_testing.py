"""The conformance kit (`plphp.testing`): every preset passes it, and it catches broken policies."""

from __future__ import annotations

import re

import pytest
import torch

from plphp.components import Params, Selector
from plphp.hookspecs import hookimpl
from plphp.models import ARCHITECTURES
from plphp.policy import load_policy
from plphp.registry import get_registry, register_plugin, unregister_plugin
from plphp.testing import PolicyCheckError, _check_report, check_policy, tiny_vlm, with_stage


def _stages(name: str) -> list[str]:
    """The stages a preset runs at: its own, and decode too when its selector keeps one set for all heads
    (input-stage presets read vision-side statistics, which only the input stage has)."""
    policy = load_policy(name)
    if policy.stage == "input":
        return ["input"]
    return ["prefill", "decode"] if not policy.selector.per_head else [policy.stage]


#: Architectures that refuse some prefill-stage policies, and a phrase of their reason.
PREFILL_REFUSALS = {"qwen3_vl": "DeepStack", "gemma3": "(sliding-window|bidirectionally)", "qwen3_5": "(linear|hybrid)"}
#: Architectures whose adapter reads no vision-tower statistics: [CLS]-attention presets fail there.
NO_TOWER = ("mistral3", "internvl", "idefics3", "smolvlm")

MATRIX = [(name, stage) for name in sorted(get_registry().presets()) for stage in _stages(name)]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize(("preset", "stage"), MATRIX, ids=[f"{p}@{s}" for p, s in MATRIX])
def test_every_preset_passes_the_kit(preset, stage, architecture):
    policy = with_stage(preset, stage) if stage != load_policy(preset).stage else preset
    if stage == "input" and architecture in NO_TOWER and load_policy(preset).collector.name == "cls_attention":
        with pytest.raises(PolicyCheckError, match="no vision tower plphp knows"):
            check_policy(policy, architectures=[architecture])
        return
    results = check_policy(policy, architectures=[architecture])
    assert [r.batch for r in results] == ["batch1", "batch3"]
    if results[0].skipped:  # refused with a one-line ConfigError: the layers the prefill stage may not drop from
        assert stage in ("prefill", "input") and architecture in PREFILL_REFUSALS, results[0].skipped
        assert re.search(PREFILL_REFUSALS[architecture], results[0].skipped) and "\n" not in results[0].skipped
        return
    if preset != "full":
        assert all(r.vision_kv_reduction > 0 for r in results), "the preset pruned nothing on this model"


def test_the_kit_runs_a_model_of_the_authors_own_and_reports_what_an_architecture_refuses():
    from plphp.testing import TinyVLM

    vlm = tiny_vlm("qwen2_vl")
    mine = TinyVLM("my_qwen", vlm.model, vlm.processor, {"only": vlm.inputs["batch1"]})
    (result,) = check_policy("plphp", architectures=[mine], batches=["only"])
    assert (result.architecture, result.batch, result.skipped) == ("my_qwen", "only", "")
    (refused,) = check_policy("fastv", architectures=["gemma3"], batches=["batch1"])
    assert "cannot hold with stage 'prefill'" in refused.skipped and refused.max_logit_diff != refused.max_logit_diff
    with pytest.raises(PolicyCheckError, match="not a layer of this model"):  # a mistake, not a refusal
        check_policy("plphp", architectures=["gemma3"], batches=["batch1"], start_layer=9)


def test_the_fixtures_come_from_the_pytest_plugin(check_policy, tiny_vlm):
    vlm = tiny_vlm("llava")
    assert vlm.inputs["batch3"]["input_ids"].shape[0] == 3
    assert check_policy("fastv", architectures=["llava"], batches=["batch1"])[0].max_logit_diff < 1e-5


# -- broken policies ---------------------------------------------------------------------------------


class _Broken(Selector):
    """A head_topk that breaks the contract in one way (set by the subclass)."""

    per_head = True

    class Params(Params):
        pass

    def select(self, stats, retention, prompt, layer_idx):
        from plphp.policies.head_topk import HeadTopK

        keep = HeadTopK().select(stats, retention, prompt, layer_idx)
        return self.break_(keep, prompt)


def _broken(name: str, break_, **attributes):
    return type(f"Broken_{name}", (_Broken,), {"name": name, "break_": staticmethod(break_), **attributes})


def _unsorted(keep, prompt):
    return keep[..., [1, 0, *range(2, keep.shape[-1])]]


def _duplicate(keep, prompt):
    keep = keep.clone()
    keep[..., 1] = keep[..., 0]
    return keep


def _out_of_range(keep, prompt):
    keep = keep.clone()
    keep[0, :, 0] = prompt.length + 5
    return keep


def _text(keep, prompt):
    keep = keep.clone()
    first_text = int(torch.nonzero(prompt.key_valid[0] & ~prompt.vision_mask[0])[0])
    keep[0, :, 0] = first_text  # before every image, so the row stays sorted
    return keep


def _too_few(keep, prompt):
    keep = keep.clone()
    keep[..., -1] = -1
    return keep


def _as_is(keep, prompt):
    return keep  # head_topk's heads differ: a lie for a selector that declares per_head = False


class _Random(_Broken):
    def select(self, stats, retention, prompt, layer_idx):
        from plphp.policies.random_select import RandomSelector

        return RandomSelector(seed=int(torch.randint(0, 1000, ()))).select(stats, retention, prompt, layer_idx)


BROKEN = {
    "unsorted": (_broken("broken_unsorted", _unsorted), "not sorted and unique"),
    "duplicate": (_broken("broken_duplicate", _duplicate), "not sorted and unique"),
    "out_of_range": (_broken("broken_range", _out_of_range), "beyond the prompt length"),
    "keeps_text": (_broken("broken_text", _text), "not a vision token"),
    "too_few": (_broken("broken_count", _too_few), "the budget is"),
    "not_shared": (_broken("broken_shared", _as_is, per_head=False), "kept different tokens in different heads"),
    "nondeterministic": (type("Nondeterministic", (_Random,), {"name": "broken_random"}), "not deterministic"),
}


class _Plugin:
    @hookimpl
    def plphp_selectors(self):
        return [cls for cls, _ in BROKEN.values()]


@pytest.fixture(scope="module")
def broken_plugin():
    plugin = _Plugin()
    register_plugin(plugin, name="broken-selectors")
    yield
    unregister_plugin(plugin)


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_kit_catches_a_broken_selector(broken_plugin, case):
    cls, message = BROKEN[case]
    with pytest.raises(PolicyCheckError, match=message):
        check_policy({"preset": "plphp", "start_layer": 0, "selector": {"name": cls.name}}, architectures=["llava"])


def test_the_kit_catches_a_broken_selector_inside_generate(broken_plugin):
    """The same contract is enforced by the backend: the kit reports where it broke."""
    from plphp.testing import _generate

    vlm = tiny_vlm("qwen2_vl")
    policy = load_policy({"preset": "plphp", "selector": {"name": "broken_duplicate"}})
    with pytest.raises(Exception, match="not sorted and unique"):
        _generate(vlm.model, vlm.inputs["batch3"], policy, "prune")


def test_the_kit_catches_a_cache_that_lost_text():
    vlm = tiny_vlm("llava")
    policy = load_policy("plphp", start_layer=0)
    from plphp.testing import _generate

    _, report = _generate(vlm.model, vlm.inputs["batch3"], policy, "prune")
    _check_report(report, vlm.inputs["batch3"], policy, vlm.model, "ok")
    report.layers[1].physical_length -= 1  # as if one text entry had been dropped
    with pytest.raises(PolicyCheckError, match="text was dropped"):
        _check_report(report, vlm.inputs["batch3"], policy, vlm.model, "here")


def test_the_kit_catches_an_allocator_out_of_range():
    from plphp.components import Allocator

    class Overflow(Allocator):
        name = "overflow"

        def allocate(self, stats, prompt):
            return torch.full((prompt.num_layers, prompt.batch_size), 1.5)

    class Plugin:
        @hookimpl
        def plphp_allocators(self):
            return [Overflow]

    plugin = Plugin()
    register_plugin(plugin, name="overflow")
    try:
        with pytest.raises(PolicyCheckError, match=r"retention outside \[0, 1\]"):
            check_policy({"allocator": {"name": "overflow"}}, architectures=["llava"])
    finally:
        unregister_plugin(plugin)


def test_the_kit_gives_a_shared_model_back_its_attention_implementation():
    vlm = tiny_vlm("qwen2_vl")
    text_config = vlm.model.config.get_text_config(decoder=True)
    vlm.model.set_attn_implementation({"text_config": "eager"})
    try:
        check_policy("full", architectures=["qwen2_vl"], batches=["batch1"])
        assert text_config._attn_implementation == "eager"
    finally:
        vlm.model.set_attn_implementation({"text_config": "sdpa"})
    check_policy("full", architectures=["qwen2_vl"], batches=["batch1"])
    assert text_config._attn_implementation == "sdpa"
