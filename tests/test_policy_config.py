"""Loading policies from presets, dicts and files, and the errors bad configs give."""

from __future__ import annotations

import pytest

import plphp
from plphp.errors import ConfigError


def test_preset_defaults_remove_at_least_half_of_the_vision_kv_on_24_layers():
    policy = plphp.load_policy("plphp")
    params = policy.allocator.params
    top = params.retention + params.delta
    worst_kept = (policy.start_layer + (24 - policy.start_layer) * top) / 24
    assert worst_kept <= 0.5


def test_overrides_merge_into_the_preset():
    policy = plphp.load_policy("plphp", allocator={"retention": 0.2}, start_layer=0)
    assert policy.allocator.params.retention == 0.2
    assert policy.allocator.params.alpha == plphp.load_policy("plphp").allocator.params.alpha
    assert policy.start_layer == 0 and policy.name == "plphp"


def test_changing_a_component_does_not_inherit_the_old_ones_parameters():
    policy = plphp.load_policy("plphp", allocator={"name": "uniform", "retention": 0.7})
    assert policy.allocator.name == "uniform" and policy.allocator.params.retention == 0.7


def test_dict_and_policy_objects(tmp_path):
    policy = plphp.load_policy({"allocator": {"name": "uniform", "retention": 0.4}})
    assert policy.name == "custom" and policy.selector.name == "head_topk"
    assert plphp.load_policy(policy) is policy
    assert plphp.load_policy(policy, start_layer=3).start_layer == 3


def test_yaml_and_toml_files(tmp_path):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("policy:\n  preset: plphp\n  allocator:\n    retention: 0.25\n")
    toml_file = tmp_path / "p.toml"
    toml_file.write_text('preset = "plphp"\nstart_layer = 1\n[allocator]\nretention = 0.25\n')
    from_yaml, from_toml = plphp.load_policy(yaml_file), plphp.load_policy(str(toml_file))
    assert from_yaml.allocator.params.retention == from_toml.allocator.params.retention == 0.25
    assert from_toml.start_layer == 1


BAD = [
    ({"preset": "plpph"}, "policy.preset", "'plpph'", "did you mean 'plphp'"),
    ({"preset": "plphp", "allocater": {}}, "policy.allocater", "unknown field", "did you mean 'allocator'"),
    (
        {"preset": "plphp", "allocator": {"retentoin": 0.2}},
        "policy.allocator.retentoin",
        "unknown field",
        "'retention'",
    ),
    (
        {"preset": "plphp", "allocator": {"retention": 1.5}},
        "policy.allocator.retention",
        "1.5",
        "less than or equal to 1",
    ),
    ({"preset": "plphp", "allocator": {"alpha": 0.05}}, "policy.allocator", "beta (0.1)", "alpha (0.05)"),
    ({"preset": "plphp", "allocator": {"retention": 0.95, "delta": 0.1}}, "policy.allocator", "retention=0.95", "<= 1"),
    (
        {"preset": "plphp", "selector": {"name": "head_top"}},
        "policy.selector.name",
        "'head_top'",
        "did you mean 'head_topk'",
    ),
    ({"preset": "plphp", "selector": {"gqa_reduce": "sum"}}, "policy.selector.gqa_reduce", "'sum'", "'mean' or 'max'"),
    ({"preset": "plphp", "stage": "prefill"}, "policy.stage", "'head_topk'", "chooses per head"),
    ({"preset": "plphp", "stage": "midway"}, "policy.stage", "'midway'", "'decode', 'prefill' or 'input'"),
    ({"preset": "plphp", "start_layer": -1}, "policy.start_layer", "-1", "greater than or equal to 0"),
    ({"preset": "plphp", "start_layer": 4, "end_layer": 2}, "policy", "end_layer (2)", "start_layer (4)"),
    ({"collector": {"window": 2}}, "policy", "collector needs a 'name'", "None"),
]


@pytest.mark.parametrize(("config", "field", "value", "allowed"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_configs_give_one_line_naming_field_value_and_allowed(config, field, value, allowed):
    with pytest.raises(ConfigError) as info:
        plphp.load_policy(config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(field)
    assert value in message and allowed in message


def test_misspelt_yaml_key_in_a_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("policy:\n  preset: plphp\n  selectr:\n    name: head_topk\n")
    with pytest.raises(ConfigError, match=r"policy.selectr: unknown field.*did you mean 'selector'"):
        plphp.load_policy(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        plphp.load_policy(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        plphp.load_policy(broken)
    with pytest.raises(plphp.UnknownNameError, match="registered presets"):
        plphp.load_policy("no-such-preset")


def test_every_policy_config_in_configs_loads():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    policies = [p for p in sorted(folder.glob("*.yaml")) if not p.name.startswith("run-")]
    assert len(policies) >= 3
    for path in policies:
        plphp.load_policy(path)
    assert plphp.load_policy(folder / "plphp.yaml").config == {**plphp.load_policy("plphp").config, "preset": None}


def test_every_builtin_preset_has_a_config_file_that_matches_it():
    from pathlib import Path

    from plphp.policies.presets import PRESETS

    folder = Path(__file__).resolve().parents[1] / "configs"
    for preset in PRESETS:
        path = folder / f"{preset.name}.yaml"
        assert path.is_file(), f"configs/{preset.name}.yaml is missing"
        loaded = {**plphp.load_policy(path).config, "preset": None}
        assert loaded == {**plphp.load_policy(preset.name).config, "preset": None}, path.name


def test_the_example_run_config_validates():
    from pathlib import Path

    from plphp.policy import read_config_file
    from plphp.runconfig import RunConfig

    data = read_config_file(Path(__file__).resolve().parents[1] / "configs" / "run-example.yaml")
    config = RunConfig.model_validate(data)
    assert plphp.load_policy(config.policy).name == "plphp"
