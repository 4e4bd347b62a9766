"""The `--model_args` of the lmms-eval model `plphp`: the model, the policy and its overrides.

    --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct,policy=plphp,retention=0.3,dtype=bfloat16

Every key is one of `ModelArgs`' fields or a policy override: `retention` (the allocator's
retention), a top-level policy key (`stage`, `start_layer`, ...), or `<component>.<field>`
(`allocator.alpha`, `collector.window`). Anything else, a policy that does not exist and a value of
the wrong type are refused in one line that names the argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from plphp.errors import ConfigError, PlphpError
from plphp.policy import Policy, PolicyConfig, load_policy
from plphp.validation import StrictNumbers, shown, validate

#: The built-in model's `pretrained` value: the grid model that ships with plphp.
GRID = "grid"
#: Policy keys holding a component (`<kind>.<field>=value` sets one of its fields).
COMPONENT_KEYS = tuple(name for name, field in PolicyConfig.model_fields.items() if field.annotation == dict[str, Any])
#: Top-level policy keys a model argument may set (`policy=` names the preset or file).
POLICY_KEYS = tuple(name for name in PolicyConfig.model_fields if name not in (*COMPONENT_KEYS, "preset", "name"))
#: The allocator field that `retention=` sets.
RETENTION = "retention"


class ModelArgs(StrictNumbers):
    """What loads and runs the model (the rest of `--model_args` is the policy)."""

    model_config = ConfigDict(extra="forbid")

    pretrained: str = Field(GRID, min_length=1, description="hub id, local directory, or 'grid' (ships with plphp)")
    policy: str = Field("plphp", min_length=1, description="a preset name or a YAML/TOML policy file; 'full': none")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    device: str = Field("auto", description="'auto' (the GPU of this rank, else cpu), 'cpu', 'cuda:1', ...")
    device_map: str | None = Field(None, description="e.g. 'auto': split one large model over this node's GPUs")
    batch_size: int = Field(1, ge=1, le=4096)
    max_new_tokens: int | None = Field(None, ge=1, description="a cap on the tasks' own max_new_tokens")
    summary: str | None = Field(None, description="where the plphp summary goes (default: beside the results)")
    trust_remote_code: bool = False


@dataclass(frozen=True)
class LmmsSettings:
    """`--model_args`, checked: the model's settings and the policy (with its overrides applied)."""

    args: ModelArgs
    policy: Policy
    overrides: dict[str, Any]
    pretrained_given: bool


def _override(key: str, value: Any) -> dict[str, Any] | None:
    """The policy override that the model argument `key=value` stands for (None: not a policy key)."""
    if key == RETENTION:
        return {"allocator": {RETENTION: value}}
    if key in POLICY_KEYS:
        return {key: value}
    kind, dot, field = key.partition(".")
    if dot and kind in COMPONENT_KEYS and field and "." not in field:
        return {kind: {field: value}}
    return None


def _merge(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping):
            _merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


def _unknown(key: str) -> ConfigError:
    allowed = [*ModelArgs.model_fields, RETENTION, *POLICY_KEYS, *(f"{kind}.<field>" for kind in COMPONENT_KEYS)]
    close = difflib.get_close_matches(key, [*ModelArgs.model_fields, RETENTION, *POLICY_KEYS], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"model_args: unknown argument {key!r}; allowed are {', '.join(allowed)}{hint}")


def parse_model_args(model_args: Mapping[str, Any]) -> LmmsSettings:
    """Check `--model_args` (as lmms-eval parsed them: numbers already numbers) and build the policy.

    Raises:
        ConfigError: one line naming the argument: an unknown key, a value of the wrong type or
            range, a policy that does not exist, an override the policy refuses.
    """
    fields, overrides = {}, {}
    for key, value in model_args.items():
        if key in ModelArgs.model_fields:
            fields[key] = value
        elif (override := _override(key, value)) is not None:
            overrides[key] = override
        else:
            raise _unknown(key)
    args = validate(ModelArgs, fields, "model_args")
    try:
        policy = load_policy(args.policy)
    except PlphpError as exc:
        raise ConfigError(f"model_args policy={args.policy!r}: {exc}") from None
    merged: dict[str, Any] = {}
    for key, override in overrides.items():  # one at a time, so that an error names its argument
        _merge(merged, override)
        try:
            policy_with = load_policy(args.policy, **merged)
        except PlphpError as exc:
            raise ConfigError(f"model_args {key}={shown(model_args[key])}: {exc}") from None
        policy = policy_with
    return LmmsSettings(args, policy, merged, "pretrained" in fields)


def harness_args(additional: Mapping[str, Any], model_args: Mapping[str, Any]) -> dict[str, Any]:
    """The settings lmms-eval adds from its own options (`--batch_size`, `--device`), for the keys that
    `--model_args` does not set; `max_batch_size` and unset (None) options are dropped.

    Raises:
        ConfigError: for a `--batch_size` that is not a number (`auto` is not supported).
    """
    out: dict[str, Any] = {}
    for key, value in additional.items():
        if value is None or key in model_args or key == "max_batch_size":
            continue
        if key == "batch_size":
            text = str(value)
            if not text.isdigit():
                raise ConfigError(f"--batch_size: {text!r} is not supported by the plphp model; give a number")
            value = int(text)
        out[key] = value
    return out
