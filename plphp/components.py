"""Base classes of the policy components: collectors, allocators, selectors and (optional) mergers.

A component is a small class with a registry `name`, a pydantic `Params` model holding its
hyper-parameters (validated ranges and cross-field checks; numeric fields take numbers only, see
`plphp.validation.StrictNumbers`) and one method. Components see tensors
and a `PromptInfo`, never a model: they run unchanged under any backend and are testable on random
tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import ConfigDict

from plphp.stats import LayerStats, PromptInfo, VisionStats
from plphp.validation import StrictNumbers, validate


class Params(StrictNumbers):
    """Hyper-parameters of a component. Unknown keys are rejected, values are validated.

    A field that expects a number refuses bools, strings, NaN and infinity (an int is still a float).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(ABC):
    """Common part of collectors, allocators and selectors."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | None = None, **values: Any):
        if params is not None and values:
            raise TypeError("pass either a Params object or keyword values, not both")
        self.params = (
            params if params is not None else validate(self.Params, values, getattr(self, "name", type(self).__name__))
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({fields})"

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Collector(Component):
    """Turns one layer's prefill queries and keys into `LayerStats`."""

    kind: ClassVar[str] = "collector"
    #: False when the collector does not measure the vision attention `γ` (it returns NaN, as
    #: `key_norm` does); a policy pairing it with an allocator that has `needs_vision_attention`
    #: is refused when it is loaded.
    measures_vision_attention: ClassVar[bool] = True
    #: True when the collector also reads the layer's output hidden states (DART compares tokens by
    #: them); the backend then calls `collect` once the layer has run, with `hidden_states=`.
    reads_hidden_states: ClassVar[bool] = False
    #: The stages the collector can drive: decoder-attention collectors serve "decode" and
    #: "prefill"; vision-side collectors (`VisionCollector`) serve "input".
    stages: ClassVar[tuple[str, ...]] = ("decode", "prefill")

    @abstractmethod
    def collect(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        prompt: PromptInfo,
        layer_idx: int,
        scaling: float,
    ) -> LayerStats:
        """Score the vision tokens of one layer.

        Args:
            query: `[B, H, L, D]` post-RoPE queries of the prompt.
            key: `[B, H_kv, L, D]` post-RoPE keys of the prompt (not repeated for GQA).
            prompt: vision positions, segments and padding of the prompt.
            layer_idx: index of the decoder layer.
            scaling: the softmax scale the model uses (usually `D ** -0.5`).

        A collector with `reads_hidden_states` also takes `hidden_states`: `[B, L, D_model]`, the
        layer's output after the language model's final norm (the features its LM head would read).
        """


class VisionCollector(Collector):
    """Scores vision tokens from vision-side statistics before the decoder's first layer (input stage)."""

    measures_vision_attention: ClassVar[bool] = False
    stages: ClassVar[tuple[str, ...]] = ("input",)

    @property
    def tower_layer(self) -> int | None:
        """The vision tower layer whose attention the collector reads (negative counts from the
        end), or None when it reads the features alone."""
        return None

    def collect(self, query, key, prompt, layer_idx, scaling) -> LayerStats:
        raise TypeError(f"collector {self.name!r} scores vision-side statistics; it serves the input stage only")

    @abstractmethod
    def collect_vision(self, vision: VisionStats, prompt: PromptInfo) -> LayerStats:
        """Score the vision tokens before the decoder.

        Args:
            vision: the projected features, the tower's attention statistic and each image's cells.
            prompt: vision positions, segments and padding of the prompt.

        Returns:
            `LayerStats` with scores `[B, H_kv, L]` (one row repeated for every head), NaN `γ`, and
                `features` when a selector or merger downstream compares tokens.
        """


class Allocator(Component):
    """Turns the statistics of all layers into a retention rate per layer and sample."""

    kind: ClassVar[str] = "allocator"
    #: True when the allocator reads each layer's vision attention `γ` (`vision_tiers`); a policy
    #: pairing it with a collector whose `measures_vision_attention` is False is refused when it is
    #: loaded, instead of allocating from NaN.
    needs_vision_attention: ClassVar[bool] = False

    @abstractmethod
    def allocate(self, stats: Sequence[LayerStats], prompt: PromptInfo) -> torch.Tensor:
        """Return `[num_layers, B]` retention rates in [0, 1] (fraction of vision tokens kept)."""


class Selector(Component):
    """Turns one layer's statistics and retention into the vision positions each KV head keeps."""

    kind: ClassVar[str] = "selector"
    #: True when different heads may keep different tokens; such selectors cannot drive the
    #: prefill stage, where one keep-set must hold for the whole hidden-state sequence.
    per_head: ClassVar[bool] = True
    #: True when heads of a layer may keep different counts (head-adaptive budgets, AdaKV); the
    #: layer then keeps `H_kv · budget` entries over its heads, stored padded to its largest head.
    head_budgets: ClassVar[bool] = False

    @abstractmethod
    def select(self, stats: LayerStats, retention: torch.Tensor, prompt: PromptInfo, layer_idx: int) -> torch.Tensor:
        """Choose the kept vision tokens.

        Args:
            stats: the layer's statistics.
            retention: `[B]` retention rate per sample.
            prompt: vision positions and segments.
            layer_idx: index of the decoder layer.

        Returns:
            `[B, H_kv, k]` long: per sample and KV head the kept vision positions, ascending
                and unique, padded with -1 at the end. Sample `b` keeps
                `budget_per_sample(retention, prompt)[b]` in every head (with `head_budgets`, that
                many per head on average). A selector with `per_head = False` returns the same
                row for every head.
        """


class Merger(Component):
    """Folds the vision tokens a selector dropped into kept or new tokens (input stage).

    A merger returns an assignment: for every prompt position, the position of the output token it
    folds into, or -1 (text, padding, a dropped token that is discarded). Output tokens are the
    fixed points (`assignment[p] == p`) and take the mean feature of the tokens assigned to them;
    they sit at their own prompt position. Contract (`plphp.contract.check_merge`): each image
    yields its budget of output tokens, every input token is accounted for exactly once (it is an
    output token, folds into one of its own image, or is discarded), and a merger that merges
    nothing (every dropped token -1) is plain selection.
    """

    kind: ClassVar[str] = "merger"

    def budget(self, selected: list[int], vision: VisionStats, prompt: PromptInfo) -> list[int]:
        """Output tokens per sample; by default the selector's budget `selected`."""
        return selected

    @abstractmethod
    def merge(self, keep: torch.Tensor, stats: LayerStats, vision: VisionStats, prompt: PromptInfo) -> torch.Tensor:
        """Assign every vision token to an output token.

        Args:
            keep: `[B, k]` the selector's kept positions, ascending, -1 padded.
            stats: the collector's statistics (`scores`, `features`).
            vision: the vision-side statistics (cells of each image).
            prompt: vision positions and segments.

        Returns:
            `[B, L]` long assignment (see the class docstring).
        """
