"""`--sweep` parsing: ranges, lists, the overrides each point applies, and errors that name the problem."""

from __future__ import annotations

import pytest

import plphp
from plphp.bench.sweep import parse_sweep
from plphp.errors import ConfigError


def test_a_range_includes_its_stop_within_float_rounding():
    sweep = parse_sweep("retention=0.1:1.0:0.1")
    assert sweep.field == "retention"
    assert sweep.values == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert parse_sweep("retention=0.2:0.9:0.3").values == (0.2, 0.5, 0.8)


def test_a_list_keeps_its_order():
    assert parse_sweep("allocator.retention=0.5, 0.2").values == (0.5, 0.2)


def test_retention_is_a_uniform_allocator_and_other_fields_are_dotted_paths():
    assert parse_sweep("retention=0.3").overrides(0.3) == {"allocator": {"name": "uniform", "retention": 0.3}}
    assert parse_sweep("allocator.delta=0:0.1:0.05").overrides(0.05) == {"allocator": {"delta": 0.05}}
    assert parse_sweep("start_layer=0,2").overrides(2.0) == {"start_layer": 2}
    policy = plphp.load_policy("plphp", **parse_sweep("retention=0.3").overrides(0.3))
    assert policy.allocator.name == "uniform" and policy.allocator.params.retention == 0.3
    assert policy.selector.name == "head_topk" and policy.start_layer == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("retention", "expected FIELD=START:STOP:STEP or FIELD=V1,V2"),
        ("retention=", "expected FIELD=START:STOP:STEP"),
        ("=0.1:1:0.1", "expected FIELD=START:STOP:STEP"),
        ("retention=a:1:0.1", "START 'a' is not a number"),
        ("retention=0.1:b:0.1", "STOP 'b' is not a number"),
        ("retention=0.1:1", "range '0.1:1' needs three parts START:STOP:STEP"),
        ("retention=0.1:1:0", "STEP '0' must be positive"),
        ("retention=0.5:0.1:0.1", "STOP '0.1' is below START '0.5'"),
        ("retention=0.5,x", "value 'x' is not a number"),
        ("retention=nan", "is not finite"),
        ("retention=0:2:1", "retention 2.0 is outside the allowed range 0 ≤ retention ≤ 1"),
        ("allocator retention=1", "field 'allocator retention' is not a dotted name"),
    ],
)
def test_bad_sweeps_name_the_argument_the_part_and_what_is_allowed(spec, message):
    with pytest.raises(ConfigError) as error:
        parse_sweep(spec)
    assert f"--sweep {spec!r}" in str(error.value)
    assert message in str(error.value)


def test_values_the_policy_rejects_are_named_by_the_policy():
    sweep = parse_sweep("allocator.retention=1.0")
    with pytest.raises(ConfigError, match="allocator"):
        plphp.load_policy("plphp", **sweep.overrides(1.0))
