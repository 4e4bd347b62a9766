"""Fuzzing `load_policy` with malformed configs: every one gives a valid Policy or a one-line plphp error.

Configs start from a preset or a written-out preset config and are then broken at any level: wrong
types, out-of-range numbers, bools and strings in numeric fields, NaN and infinity, unknown keys,
non-mapping sections, non-string names and presets, other components' parameters, nested garbage.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import plphp
from plphp.errors import PlphpError
from plphp.policy import Policy, PolicyConfig
from plphp.registry import KINDS, get_registry

REGISTRY = get_registry()
PRESETS = sorted(REGISTRY.presets())
COMPONENTS = {kind: sorted(REGISTRY.components(kind)) for kind in KINDS}
PARAMS = sorted({f for kind in KINDS for c in REGISTRY.components(kind).values() for f in c.Params.model_fields})
TOP_FIELDS = sorted(PolicyConfig.model_fields)

SPECIAL = [0, 1, -1, 2, 3, 50, 4096, 4097, 0.0, 0.05, 0.5, 0.95, 1.0, 1.5, -0.1, 1e300, -1e300, math.nan, math.inf]
SPECIAL += [-math.inf, True, False, None, "", " ", "0.3", "question", "mean", "max", "decode", "prefill", "plphp"]
SPECIAL += ["own_layer", "layer_before_start", "\n", "a\nb", "é", [], {}, [0.25, 0.5], [True], [0.5, 0.25], (1,)]

leaves = (
    st.sampled_from(SPECIAL)
    | st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.binary(max_size=4)
    | st.sampled_from(PRESETS + [n for names in COMPONENTS.values() for n in names])
)
garbage = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(
            st.text(max_size=6) | st.integers(-3, 3) | st.sampled_from(PARAMS + TOP_FIELDS), inner, max_size=3
        )
    ),
    max_leaves=6,
)
keys = st.sampled_from(TOP_FIELDS + list(KINDS)) | st.text(max_size=8) | st.integers(-2, 2) | st.none()


@st.composite
def malformed(draw):
    """A policy spec: usually a broken config mapping, sometimes not a mapping at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(garbage | st.sampled_from([None, 42, 1.5, b"plphp", ["plphp"], ("plphp",), object()]))
    preset = draw(st.sampled_from(PRESETS))
    config = {"preset": preset} if draw(st.booleans()) else {**plphp.load_policy(preset).config, "preset": None}
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.integers(0, 7))
        if action == 0:  # a top-level field gets any value
            config[draw(keys)] = draw(garbage)
        elif action == 1:  # a component section becomes something else
            config[draw(st.sampled_from(KINDS))] = draw(garbage)
        elif action in (2, 3):  # a component's parameter (its own or another's, or unknown) gets any value
            kind = draw(st.sampled_from(KINDS))
            section = config.get(kind) if isinstance(config.get(kind), dict) else {}
            config[kind] = {**section, draw(st.sampled_from(PARAMS) | st.text(max_size=8)): draw(garbage)}
        elif action == 4:  # another registered component, or a name that is not a string
            kind = draw(st.sampled_from(KINDS))
            name = draw(st.sampled_from(COMPONENTS[kind]) | garbage)
            section = config.get(kind) if isinstance(config.get(kind), dict) and draw(st.booleans()) else {}
            config[kind] = {**section, "name": name}
        elif action == 5:  # a key goes missing
            if config:
                config.pop(draw(st.sampled_from(sorted(config, key=repr))))
        elif action == 6:  # a numeric field out of range or of the wrong type
            field = draw(st.sampled_from(["start_layer", "end_layer"]))
            config[field] = draw(st.sampled_from(SPECIAL) | st.integers(-5, 100))
        else:  # the preset itself is broken
            config["preset"] = draw(garbage | st.sampled_from(PRESETS))
    return config


def _check(spec) -> None:
    try:
        policy = plphp.load_policy(spec)
    except PlphpError as exc:
        message = str(exc)
        assert message.strip(), repr(spec)
        assert "\n" not in message and "\r" not in message, (spec, message)
    else:
        assert isinstance(policy, Policy)
        assert "\n" not in policy.describe()


def test_malformed_configs_give_a_policy_or_a_one_line_plphp_error():
    seen = []

    @settings(max_examples=700)
    @given(malformed())
    def fuzz(spec):
        seen.append(spec)
        _check(spec)

    fuzz()
    assert len(seen) >= 500


def test_malformed_policy_files_give_a_policy_or_a_one_line_plphp_error():
    """The same configs, and random text, written to YAML and TOML files."""
    with tempfile.TemporaryDirectory() as folder:
        seen = []

        @settings(max_examples=150)
        @given(malformed() | st.text(max_size=40), st.sampled_from([".yaml", ".toml", ".yml"]))
        def fuzz(spec, suffix):
            seen.append(spec)
            path = Path(folder) / f"policy{suffix}"
            if isinstance(spec, str):
                path.write_text(spec)
            else:
                try:
                    path.write_text(yaml.safe_dump(spec) if suffix != ".toml" else _toml(spec))
                except (yaml.YAMLError, TypeError, ValueError):
                    return
            _check(path)
            _check(os.fspath(path))

        fuzz()
        assert len(seen) >= 100


def _toml(spec) -> str:
    """A crude TOML writer, enough to turn a config into a file (garbage may give invalid TOML: good)."""
    if not isinstance(spec, dict):
        raise TypeError
    lines, tables = [], []
    for key, value in spec.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_value(value)}")
    for key, table in tables:
        lines.append(f"[{key}]")
        lines += [f"{k} = {_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return repr(value) if not isinstance(value, str) else '"' + value.replace('"', "") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)
