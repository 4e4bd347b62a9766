"""A pruning policy: one collector, one allocator, one selector (and optionally a merger), a stage and a layer range.

`load_policy` builds one from a preset name, a YAML/TOML file or a dict, with overrides.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from plphp.components import Allocator, Collector, Merger, Selector
from plphp.contract import check_retention
from plphp.errors import ConfigError, UnknownNameError
from plphp.registry import KINDS, get_registry
from plphp.stats import LayerStats, PromptInfo
from plphp.validation import StrictNumbers, shown, validate

#: How vision tokens group into segments, each of which keeps its own share of the budget.
SEGMENT_UNITS = ("image", "frame")
POSITIONS = ("original", "compact")
#: Extensions of policy and run config files.
STAGES = ("decode", "prefill", "input")
CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


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


class PolicyConfig(StrictNumbers):
    """The `policy:` section of a config file."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None,
        min_length=1,
        max_length=80,
        description="what reports and figures call the policy; default: the preset, the file's stem, or 'custom'",
    )
    preset: str | None = Field(None, description="a preset to start from; other keys override it")
    stage: Literal["decode", "prefill", "input"] = Field(
        "decode",
        description="decode: compress the KV cache after an exact prefill; prefill: drop tokens from layer K on; "
        "input: only the kept vision tokens enter the decoder",
    )
    positions: Literal["original", "compact"] = Field(
        "original",
        description="input stage: kept tokens keep their RoPE positions (original) or take consecutive ones (compact)",
    )
    start_layer: int = Field(0, ge=0, description="first decoder layer that is pruned (K)")
    end_layer: int | None = Field(None, ge=1, description="layer after the last pruned one; null = all")
    rank_by: Literal["own_layer", "layer_before_start"] = Field(
        "own_layer",
        description="whose statistics rank a layer's tokens: its own (PLPHP) or those of layer K-1 for all (FastV)",
    )
    segments: Literal["image", "frame"] = Field(
        "image",
        description="what keeps its own share of the budget: each image and each whole video (image), "
        "or each image and each video frame (frame)",
    )
    collector: dict[str, Any] = Field(default_factory=lambda: {"name": "last_token"})
    allocator: dict[str, Any] = Field(default_factory=lambda: {"name": "uniform"})
    selector: dict[str, Any] = Field(default_factory=lambda: {"name": "head_topk"})
    merger: dict[str, Any] | None = Field(None, description="input stage: folds dropped tokens into kept ones")

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError(f"name must be one line of printable text, got {shown(value)}")
        return value

    @model_validator(mode="after")
    def _check_range(self) -> PolicyConfig:
        if self.end_layer is not None and self.end_layer <= self.start_layer:
            raise ValueError(f"end_layer ({self.end_layer}) must be greater than start_layer ({self.start_layer})")
        for kind in ("collector", "allocator", "selector", "merger"):
            spec = getattr(self, kind)
            if spec is not None and not isinstance(spec.get("name"), str):
                raise ValueError(
                    f"{kind} needs a 'name' (a string naming a registered {kind}), got {shown(spec.get('name'))}"
                )
        if self.start_layer == 0 and (self.stage == "prefill" or self.rank_by == "layer_before_start"):
            why = "stage 'prefill' ranks" if self.stage == "prefill" else "rank_by 'layer_before_start' ranks"
            raise ValueError(f"start_layer must be at least 1: {why} tokens by the statistics of the layer before")
        if self.stage == "input" and (self.start_layer != 0 or self.end_layer is not None):
            raise ValueError(
                f"start_layer ({self.start_layer}) and end_layer ({self.end_layer}) cannot be set with stage 'input': "
                "the kept tokens are the only ones any decoder layer sees"
            )
        if self.stage != "input" and (self.merger is not None or self.positions != "original"):
            what = "merger" if self.merger is not None else f"positions {self.positions!r}"
            raise ValueError(f"{what} needs stage 'input' (the stage is {self.stage!r})")
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
        stage: "decode" (compress the KV cache after prefill), "prefill" (drop tokens from the
            hidden states from `start_layer` on) or "input" (only the kept vision tokens enter the decoder).
        start_layer: layers before it are never pruned.
        end_layer: layers from it on are never pruned (None: no end).
        rank_by: "own_layer" (each layer ranks tokens by its own statistics) or "layer_before_start"
            (every pruned layer uses the statistics of layer `start_layer - 1`, as FastV does). The
            prefill stage always ranks by the layer before each drop.
        segments: "image" (each image and each whole video is a segment, which keeps its own share
            of the budget) or "frame" (each image and each video frame is one).
        name: what reports, tables and figures call the policy: the config's `name`, else the
            file's stem for a policy file, else the preset's name, else "custom".
        merger: input stage: folds the dropped tokens into kept or new ones (None: plain selection).
        positions: input stage: "original" (kept tokens keep their positions) or "compact".
    """

    collector: Collector
    allocator: Allocator
    selector: Selector
    stage: str = "decode"
    start_layer: int = 0
    end_layer: int | None = None
    rank_by: str = "own_layer"
    segments: str = "image"
    name: str = "custom"
    config: Mapping[str, Any] = field(default_factory=dict, compare=False)
    merger: Merger | None = None
    positions: str = "original"

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
            + (f"segments={self.segments}, " if self.segments != "image" else "")
            + (f"positions={self.positions}, " if self.stage == "input" else "")
            + f"{self.collector!r}, {self.allocator!r}, {self.selector!r}"
            + (f", {self.merger!r}" if self.merger is not None else "")
        )


# -- loading ---------------------------------------------------------------------------------

_ALLOWED = ", ".join(CONFIG_SUFFIXES)


def _parse_error(exc: Exception) -> str:
    """Where and what a YAML or TOML parser found wrong, on one line ("line 3, column 7: ...")."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if mark is None or not problem:  # a yaml error with only a context
        mark, problem, context = context_mark, context, None
    if mark is not None and problem:
        where = f"line {mark.line + 1}, column {mark.column + 1}: {' '.join(str(problem).split())}"
        if context and context_mark is not None:
            where += (
                f" ({' '.join(str(context).split())} at line {context_mark.line + 1}, column {context_mark.column + 1})"
            )
        return where
    text = " ".join(str(exc).split())
    found = re.match(r"(.*) \(at line (\d+), column (\d+)\)$", text)  # tomllib
    return f"line {found[2]}, column {found[3]}: {found[1]}" if found else text


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict."""
    path = Path(path)
    where = f"config file {str(path)!r}"
    if is_kind(path, "is_dir"):
        raise ConfigError(f"{where} is a directory; give a {_ALLOWED} file")
    if not is_kind(path, "is_file"):
        raise ConfigError(f"{where} does not exist")
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"{where}: unknown extension {suffix!r}; allowed are {_ALLOWED}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, RecursionError
        raise ConfigError(f"{where} is not valid {suffix[1:].upper()}: {_parse_error(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top, got {type(data).__name__}")
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


def _preset_names() -> str:
    return ", ".join(repr(name) for name in sorted(get_registry().presets()))


def _resolve_preset(data: Mapping[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    name = data.get("preset")
    if name is None:
        return dict(data)
    if not isinstance(name, str):
        raise ConfigError(
            f"policy.preset: must be a preset name (a string), got {shown(name)}; presets are {_preset_names()}"
        )
    if name in seen:
        raise ConfigError(f"policy.preset: presets refer to each other in a loop: {' -> '.join((*seen, name))}")
    try:
        preset = get_registry().preset(name)
    except UnknownNameError as exc:
        raise ConfigError(f"policy.preset: {exc}") from None
    base = _resolve_preset(preset.config, (*seen, name))
    rest = {k: v for k, v in data.items() if k != "preset"}
    return {**merge(base, rest), "preset": name}


def _check_component_names(data: Mapping[str, Any]) -> None:
    """Refuse a component section whose `name` is missing or not a string, naming what is registered."""
    for kind in KINDS:
        section = data.get(kind)
        if isinstance(section, Mapping) and not isinstance(section.get("name"), str):
            known = ", ".join(repr(n) for n in sorted(get_registry().components(kind)))
            raise ConfigError(
                f"policy.{kind}.name: {kind} needs a 'name' (a string), got {shown(section.get('name'))}; "
                f"registered {kind}s are {known}"
            )


def _build_component(kind: str, spec: Mapping[str, Any]) -> Any:
    registry = get_registry()
    name = spec["name"]
    try:
        cls = registry.component(kind, name)
    except UnknownNameError as exc:
        raise ConfigError(f"policy.{kind}.name: {exc}") from None
    params = validate(cls.Params, {k: v for k, v in spec.items() if k != "name"}, f"policy.{kind}")
    return cls(params)


def _check_vision_attention(collector: Collector, allocator: Allocator) -> None:
    """An allocator that reads `γ` needs a collector that measures it (`measures_vision_attention`)."""
    if allocator.needs_vision_attention and not collector.measures_vision_attention:
        registry = get_registry()
        measuring = sorted(n for n, c in registry.components("collector").items() if c.measures_vision_attention)
        blind = sorted(n for n, c in registry.components("allocator").items() if not c.needs_vision_attention)
        raise ConfigError(
            f"policy.allocator: {allocator.name!r} allocates by each layer's vision attention γ, but collector "
            f"{collector.name!r} does not measure it; use a collector that does ({', '.join(measuring) or 'none'}) "
            f"or an allocator that does not read it ({', '.join(blind) or 'none'})"
        )


def policy_from_config(data: Mapping[str, Any]) -> Policy:
    """Build a `Policy` from a `policy:` mapping (presets resolved, components validated)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"policy: expected a mapping, got {type(data).__name__}")
    resolved = _resolve_preset(data)
    _check_component_names(resolved)
    config = validate(PolicyConfig, resolved, "policy")
    collector = _build_component("collector", config.collector)
    allocator = _build_component("allocator", config.allocator)
    selector = _build_component("selector", config.selector)
    merger = _build_component("merger", config.merger) if config.merger is not None else None
    _check_vision_attention(collector, allocator)
    _check_stage(config.stage, collector)
    if config.stage in ("prefill", "input") and (selector.per_head or selector.head_budgets):
        shared = sorted(n for n, c in get_registry().components("selector").items() if not c.per_head)
        raise ConfigError(
            f"policy.stage: {config.stage!r} drops tokens from the hidden states, so one keep-set must hold for all heads, "
            f"but selector {selector.name!r} chooses per head; use stage 'decode' or a shared selector "
            f"({', '.join(shared) or 'none registered'})"
        )
    name = config.name or config.preset or "custom"
    return Policy(
        collector=collector,
        allocator=allocator,
        selector=selector,
        stage=config.stage,
        start_layer=config.start_layer,
        end_layer=config.end_layer,
        rank_by=config.rank_by,
        segments=config.segments,
        name=name,
        config={**config.model_dump(), "name": name},
        merger=merger,
        positions=config.positions,
    )


def _check_stage(stage: str, collector: Collector) -> None:
    """A collector drives the stages it declares (`Collector.stages`): vision-side ones the input stage only."""
    if stage not in collector.stages:
        fitting = sorted(n for n, c in get_registry().components("collector").items() if stage in c.stages)
        raise ConfigError(
            f"policy.collector: {collector.name!r} serves stage {'/'.join(collector.stages)}, not {stage!r}; "
            f"collectors for stage {stage!r} are {', '.join(fitting) or 'none registered'}"
        )


def is_kind(path: Path, test: str) -> bool:
    """`path.is_file()` / `path.is_dir()`, False for names the file system refuses (too long, ...)."""
    try:
        return getattr(path, test)()
    except (OSError, ValueError):
        return False


def _read_spec(spec: str | os.PathLike) -> Any:
    """The policy mapping a preset name or a policy file stands for."""
    text = os.fspath(spec)
    if not isinstance(text, str):
        raise ConfigError(f"policy: expected a preset name or a policy file path as text, got {shown(spec)}")
    path = Path(text)
    if text.strip() and path.suffix.lower() in CONFIG_SUFFIXES:
        data: Any = read_config_file(path)
        if "policy" in data:  # a run config: its `policy:` section, a mapping or a preset name
            section = data["policy"]
            if isinstance(section, str):
                return {"preset": section}
            data = section
        if isinstance(data, Mapping) and "name" not in data:
            data = {**data, "name": path.stem}
        return data
    presets = get_registry().presets()
    if text in presets or not text.strip():
        return {"preset": text}
    if is_kind(path, "is_dir"):
        raise ConfigError(f"policy: {text!r} is a directory; give a preset name or a policy file ({_ALLOWED})")
    if is_kind(path, "is_file"):
        raise ConfigError(
            f"policy file {text!r}: unknown extension {path.suffix.lower()!r}; allowed are {_ALLOWED} "
            "(or give a preset name)"
        )
    if "/" in text or os.sep in text or re.fullmatch(r"\.[A-Za-z]{1,5}", path.suffix):
        raise ConfigError(
            f"policy: {text!r} is neither a registered preset nor an existing file; "
            f"policy files end in {_ALLOWED}; presets are {_preset_names()}"
        )
    raise UnknownNameError("preset", text, presets)


def load_policy(spec: str | os.PathLike | Mapping[str, Any] | Policy = "plphp", **overrides: Any) -> Policy:
    """Build a policy from a preset name, a YAML/TOML file, or a dict; keyword overrides merge on top.

    A file may hold the policy keys at the top level or under `policy:` (as a run config does). The
    policy is named by its `name:` key, else (a file) the file's stem, else its preset, else "custom".

    Raises:
        ConfigError: on anything that is not a valid policy, in one line naming the field, the
            value and what is allowed (`UnknownNameError` for an unknown preset name).

    Examples:
        >>> policy = load_policy("plphp", allocator={"retention": 0.3})
    """
    if isinstance(spec, Policy):
        if not overrides:
            return spec
        base = dict(spec.config)
        if "preset" in overrides and "name" not in overrides and base.get("name") == base.get("preset"):
            base.pop("name", None)  # a new preset brings its own name
        return policy_from_config(merge(base, overrides))
    if isinstance(spec, Mapping):
        data: Any = dict(spec)
    elif isinstance(spec, (str, os.PathLike)):
        data = _read_spec(spec)
    else:
        raise ConfigError(
            f"policy: expected a preset name, a policy file ({_ALLOWED}), a mapping or a Policy, "
            f"got {shown(spec)} ({type(spec).__name__})"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"policy: expected a mapping, got {type(data).__name__}")
    return policy_from_config(merge(data, overrides))
