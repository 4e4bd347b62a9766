"""The pluggy registry: built-ins, run-time plugins and entry-point plugins, by name from YAML."""

from __future__ import annotations

import sys
import textwrap

import pytest

import plphp
from plphp import registry as registry_module
from plphp.errors import ConfigError, UnknownNameError
from plphp.registry import Registry


def test_builtins_are_registered_through_the_hooks():
    reg = plphp.get_registry()
    assert {"last_token"} <= set(reg.components("collector"))
    assert {"vision_tiers", "uniform"} <= set(reg.components("allocator"))
    assert {"head_topk", "random"} <= set(reg.components("selector"))
    assert {"plphp", "full", "random"} <= set(reg.presets())
    plugin_names = {name for name, _ in reg.manager.list_name_plugin()}
    assert "builtin-policies" in plugin_names, "built-ins come in through plphp's own entry points"


def test_unknown_names_list_the_registered_ones_and_the_closest():
    with pytest.raises(UnknownNameError) as info:
        plphp.get_registry().component("selector", "head-topk")
    assert "'head_topk', 'random'" in str(info.value) and "did you mean 'head_topk'" in str(info.value)
    with pytest.raises(ConfigError, match="unknown component kind"):
        plphp.get_registry().components("pruner")


def test_a_plugin_registered_at_run_time_is_usable_from_yaml(tmp_path):
    from tests.plugin_example import every_other

    config = tmp_path / "policy.yaml"
    config.write_text("policy:\n  allocator: {name: uniform, retention: 0.5}\n  selector: {name: every_other}\n")
    with pytest.raises(ConfigError, match="every_other"):
        plphp.load_policy(config)
    plphp.register_plugin(every_other)
    try:
        policy = plphp.load_policy(config)
        assert type(policy.selector).__name__ == "EveryOther"
        assert plphp.load_policy("every-other").selector.name == "every_other"
    finally:
        plphp.unregister_plugin(every_other)
    with pytest.raises(ConfigError):
        plphp.load_policy(config)


def test_a_plugin_package_is_found_through_the_entry_point_group(tmp_path, monkeypatch):
    package = tmp_path / "third_party_selector.py"
    package.write_text(
        textwrap.dedent(
            """
            import plphp
            from tests.plugin_example.every_other import EveryOther

            class Renamed(EveryOther):
                name = "entry_point_selector"

            @plphp.hookimpl
            def plphp_selectors():
                return [Renamed]
            """
        )
    )
    dist = tmp_path / "third_party_selector-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: third-party-selector\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[plphp]\nthird_party = third_party_selector\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "_REGISTRY", Registry())
    config = tmp_path / "policy.yaml"
    config.write_text("policy:\n  allocator: {name: uniform}\n  selector: {name: entry_point_selector}\n")
    assert plphp.load_policy(config).selector.name == "entry_point_selector"
    sys.modules.pop("third_party_selector", None)


def test_a_name_registered_twice_is_refused():
    from tests.plugin_example import every_other

    class Twin:
        @plphp.hookimpl
        def plphp_selectors(self):
            return [every_other.EveryOther]

    reg = Registry()
    reg.register(every_other)
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register(Twin())


def test_a_misspelt_hook_is_a_one_line_error_naming_the_plugin_and_the_hook():
    class Misspelt:
        @plphp.hookimpl
        def plphp_selector(self):  # the hook is plphp_selectors
            return []

    reg = Registry()
    with pytest.raises(ConfigError) as caught:
        reg.register(Misspelt(), name="my-plugin")
    message = str(caught.value)
    assert "\n" not in message
    assert "'my-plugin'" in message and "'plphp_selector'" in message and "did you mean 'plphp_selectors'" in message
    assert reg.manager.get_plugin("my-plugin") is None, "the refused plugin is not left registered"


def test_a_duplicate_preset_and_a_duplicate_adapter_are_refused():
    from plphp.backends.architectures.llava import LlavaAdapter
    from plphp.policy import Preset

    class TwinPreset:
        @plphp.hookimpl
        def plphp_presets(self):
            return [Preset(name="plphp", config={})]

    class TwinAdapter:
        @plphp.hookimpl
        def plphp_adapters(self):
            return [LlavaAdapter]

    reg = Registry()
    with pytest.raises(ConfigError, match="preset 'plphp' registered twice"):
        reg.register(TwinPreset())
    with pytest.raises(ConfigError, match="adapter 'llava' registered twice"):
        reg.register(TwinAdapter())
    assert len(reg.presets()) == len(Registry().presets())


def test_the_supported_architectures_come_from_the_registered_adapters():
    reg = Registry()
    assert "Qwen2VLForConditionalGeneration" in reg.architectures()
    assert all(name.endswith("Generation") for name in reg.architectures())
