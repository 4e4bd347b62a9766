"""A pruning policy: one collector, one allocator, one selector, a stage and a layer range.

`load_policy` builds one from a preset name, a YAML/TOML file or a dict, with overrides.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from plphp.components import Allocator, Collector, Selector
from plphp.contract import check_retention
from plphp.errors import ConfigError, UnknownNameError
from plphp.registry import get_registry
from plphp.stats import LayerStats, PromptInfo
from plphp.validation import validate

STAGES = ("decode", "prefill")


@dataclass(frozen=True)
class Preset:
    """A named policy config, contributed through the `plphp_presets` hook.

    Attributes:
        name: the name used in configs and on the command line.
        config: a policy config dict (the same keys as a `policy:` section).
        description: one line for `plphp policies`.
        reference: the paper the preset follows, if any.
    """

    name: str
    config: Mapping[str, Any]
    description: str = ""
    reference: str = ""


class PolicyConfig(BaseModel):
    """The `policy:` section of a config file."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(None, description="a preset to start from; other keys override it")
    stage: Literal["decode", "prefill"] = Field(
        "decode", description="decode: compress the KV cache after an exact prefill"
    )
    start_layer: int = Field(0, ge=0, description="first decoder layer that is pruned (K)")
    end_layer: int | None = Field(None, ge=1, description="layer after the last pruned one; null = all")
    rank_by: Literal["own_layer", "layer_before_start"] = Field(
        "own_layer",
        description="whose statistics rank a layer's tokens: its own (PLPHP) or those of layer K-1 for all (FastV)",
    )
    collector: dict[str, Any] = Field(default_factory=lambda: {"name": "last_token"})
    allocator: dict[str, Any] = Field(default_factory=lambda: {"name": "uniform"})
    selector: dict[str, Any] = Field(default_factory=lambda: {"name": "head_topk"})

    @model_validator(mode="after")
    def _check_range(self) -> PolicyConfig:
        if self.end_layer is not None and self.end_layer <= self.start_layer:
            raise ValueError(f"end_layer ({self.end_layer}) must be greater than start_layer ({self.start_layer})")
        for kind in ("collector", "allocator", "selector"):
            spec = getattr(self, kind)
            if not isinstance(spec.get("name"), str):
                raise ValueError(f"{kind} needs a 'name' (got {spec.get('name')!r})")
        if self.start_layer == 0 and (self.stage == "prefill" or self.rank_by == "layer_before_start"):
            why = "stage 'prefill' ranks" if self.stage == "prefill" else "rank_by 'layer_before_start' ranks"
            raise ValueError(f"start_layer must be at least 1: {why} tokens by the statistics of the layer before")
        if self.stage == "prefill" and self.end_layer is not None:
            raise ValueError(
                f"end_layer ({self.end_layer}) cannot be set with stage 'prefill': tokens dropped from the hidden "
                "states do not come back"
            )
        return self


@dataclass(frozen=True)
class Policy:
    """A composed pruning policy.

    Attributes:
        collector: scores vision tokens per layer and head during prefill.
        allocator: turns all layers' statistics into retention rates.
        selector: picks the kept vision tokens of each KV head.
        stage: "decode" (compress the KV cache after prefill) or "prefill" (drop tokens from the
            hidden states from `start_layer` on).
        start_layer: layers before it are never pruned.
        end_layer: layers from it on are never pruned (None: no end).
        rank_by: "own_layer" (each layer ranks tokens by its own statistics) or "layer_before_start"
            (every pruned layer uses the statistics of layer `start_layer - 1`, as FastV does). The
            prefill stage always ranks by the layer before each drop.
        name: preset name, or "custom".
    """

    collector: Collector
    allocator: Allocator
    selector: Selector
    stage: str = "decode"
    start_layer: int = 0
    end_layer: int | None = None
    rank_by: str = "own_layer"
    name: str = "custom"
    config: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def prunes_layer(self, layer_idx: int) -> bool:
        """Whether `layer_idx` lies in the pruned layer range."""
        return layer_idx >= self.start_layer and (self.end_layer is None or layer_idx < self.end_layer)

    def retention(self, stats: Sequence[LayerStats], prompt: PromptInfo) -> torch.Tensor:
        """`[num_layers, B]` retention per layer and sample: the allocator's, and 1.0 outside the range."""
        rates = self.allocator.allocate(stats, prompt)
        check_retention(rates, prompt, f"allocator {self.allocator.name!r}")
        pruned = torch.tensor([self.prunes_layer(i) for i in range(prompt.num_layers)])
        return torch.where(pruned[:, None].to(rates.device), rates.float(), torch.ones_like(rates, dtype=torch.float))

    def describe(self) -> str:
        """One line naming the components and their parameters."""
        return (
            f"{self.name}: stage={self.stage}, layers {self.start_layer}..{self.end_layer or 'end'}, "
            + (f"rank_by={self.rank_by}, " if self.rank_by != "own_layer" else "")
            + f"{self.collector!r}, {self.allocator!r}, {self.selector!r}"
        )


# -- loading ---------------------------------------------------------------------------------


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unknown extension {suffix!r}; allowed are .yaml, .yml, .toml"
            )
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:].upper()}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base`.

    A component section whose `name` changes replaces the base section instead of merging into it,
    so parameters of one component never leak into another.
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            if "name" in value and old.get("name") != value["name"]:
                out[key] = copy.deepcopy(dict(value))
            else:
                out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_preset(data: Mapping[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    name = data.get("preset")
    if name is None:
        return dict(data)
    if name in seen:
        raise ConfigError(f"policy.preset: presets refer to each other in a loop: {' -> '.join((*seen, name))}")
    try:
        preset = get_registry().preset(name)
    except UnknownNameError as exc:
        raise ConfigError(f"policy.preset: {exc}") from None
    base = _resolve_preset(preset.config, (*seen, name))
    rest = {k: v for k, v in data.items() if k != "preset"}
    return {**merge(base, rest), "preset": name}


def _build_component(kind: str, spec: Mapping[str, Any]) -> Any:
    registry = get_registry()
    name = spec["name"]
    try:
        cls = registry.component(kind, name)
    except UnknownNameError as exc:
        raise ConfigError(f"policy.{kind}.name: {exc}") from None
    params = validate(cls.Params, {k: v for k, v in spec.items() if k != "name"}, f"policy.{kind}")
    return cls(params)


def policy_from_config(data: Mapping[str, Any]) -> Policy:
    """Build a `Policy` from a `policy:` mapping (presets resolved, components validated)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"policy: expected a mapping, got {type(data).__name__}")
    resolved = _resolve_preset(data)
    config = validate(PolicyConfig, resolved, "policy")
    collector = _build_component("collector", config.collector)
    allocator = _build_component("allocator", config.allocator)
    selector = _build_component("selector", config.selector)
    if config.stage == "prefill" and (selector.per_head or selector.head_budgets):
        shared = sorted(n for n, c in get_registry().components("selector").items() if not c.per_head)
        raise ConfigError(
            f"policy.stage: 'prefill' drops tokens from the hidden states, so one keep-set must hold for all heads, "
            f"but selector {selector.name!r} chooses per head; use stage 'decode' or a shared selector "
            f"({', '.join(shared) or 'none registered'})"
        )
    return Policy(
        collector=collector,
        allocator=allocator,
        selector=selector,
        stage=config.stage,
        start_layer=config.start_layer,
        end_layer=config.end_layer,
        rank_by=config.rank_by,
        name=config.preset or "custom",
        config=config.model_dump(),
    )


def load_policy(spec: str | os.PathLike | Mapping[str, Any] | Policy = "plphp", **overrides: Any) -> Policy:
    """Build a policy from a preset name, a YAML/TOML file, or a dict; keyword overrides merge on top.

    A file may hold the policy keys at the top level or under `policy:` (as a run config does).

    Examples:
        >>> policy = load_policy("plphp", allocator={"retention": 0.3})
    """
    if isinstance(spec, Policy):
        if overrides:
            return policy_from_config(merge(spec.config, overrides))
        return spec
    if isinstance(spec, Mapping):
        data = dict(spec)
    else:
        text = os.fspath(spec)
        if Path(text).suffix.lower() in (".yaml", ".yml", ".toml"):
            data = read_config_file(text)
            if "policy" in data:  # a run config: its `policy:` section, a mapping or a preset name
                section = data["policy"]
                data = {"preset": section} if isinstance(section, str) else section
        else:
            presets = get_registry().presets()
            if text not in presets:
                raise UnknownNameError("preset", text, presets)
            data = {"preset": text}
    return policy_from_config(merge(data, overrides))
