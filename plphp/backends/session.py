"""`plphp.apply(model, policy)`: prune an unmodified model inside an unmodified `generate()`.

The session (docs/architecture.md, "Data flow") registers an attention function of its own that
wraps the model's (sdpa, eager, flash) and hands each prefill layer's post-RoPE query and key to the
policy's collector; a forward pre-hook puts a `PrunableLayer` in each decoder layer's cache and reads
the prompt's vision positions through the adapter; a forward hook ends prefill, where the decode
stage (`backends.decode_stage`) allocates, selects and compresses. The prefill stage
(`backends.prefill_stage`) drops tokens from the hidden states from `start_layer` on instead, and
the input stage (`backends.input_stage`) chooses them before the first decoder layer. Decoding steps
of pruned layers attend through the grouped one-query kernel (`backends.decode_attention`). Tools
observe all of this through the session's events (`backends.events`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers.cache_utils import Cache, DynamicCache

from plphp.backends import attention as attn
from plphp.backends import native
from plphp.backends.adapters import ModelAdapter
from plphp.backends.cache import PrunableLayer
from plphp.backends.compat import cache_argument, passed_cache
from plphp.backends.decode_attention import grouped_decode_attention
from plphp.backends.decode_stage import DecodeStage
from plphp.backends.events import Observers, SessionObserver
from plphp.backends.input_stage import InputStage
from plphp.backends.layer_range import check_layer_range
from plphp.backends.prefill_stage import PrefillStage
from plphp.backends.prompt import read_prompt
from plphp.backends.reporting import PrefillState
from plphp.contract import check_stats
from plphp.errors import ConfigError, PlphpError
from plphp.policy import Policy, load_policy
from plphp.registry import get_registry
from plphp.report import PruningReport
from plphp.stats import PromptInfo

_session_ids = itertools.count()


Materialize = Literal["prune", "mask"]
#: Which decode calls go through plphp's grouped one-query kernel (`plphp.backends.decode_attention`):
#: "pruned" the layers pruning shortened (unpruned layers keep the model's attention, so `full` is
#: bit-identical to plain `generate()`), "all" every layer with a plphp cache (the bench's `full-fast`,
#: the kernel's gain apart from pruning's), "model" none.
DecodeAttention = Literal["pruned", "all", "model"]
DECODE_ATTENTION = ("pruned", "all", "model")


class Session:
    """An active pruning session on one model. Use through `plphp.apply`.

    Args:
        model: the model to prune.
        policy: the composed policy.
        adapter: the model's adapter.
        materialize: "prune" removes entries from the cache; "mask" keeps and masks them.
        record_scores: keep each layer's token scores in the report.
        observers: `SessionObserver`s notified of the session's events (`plphp.backends.events`).
        decode_attention: which decode calls use plphp's grouped one-query kernel (`DecodeAttention`).

    Attributes:
        report: the `PruningReport` of the latest prefill (None before the first).
        reports: all reports of this session, one per prefill.
    """

    def __init__(
        self,
        model: Any,
        policy: Policy,
        adapter: ModelAdapter,
        materialize: Materialize = "prune",
        record_scores: bool = False,
        observers: Sequence[SessionObserver] = (),
        decode_attention: DecodeAttention = "pruned",
    ):
        if materialize not in ("prune", "mask"):
            raise ConfigError(f"materialize: {materialize!r} is not allowed; use 'prune' or 'mask'")
        if decode_attention not in DECODE_ATTENTION:
            raise ConfigError(
                f"decode_attention: {decode_attention!r} is not allowed; use one of {', '.join(DECODE_ATTENTION)}"
            )
        self.decode_attention = decode_attention
        self.model = model
        self.policy = policy
        self.adapter = adapter
        self.materialize = materialize
        self.record_scores = record_scores
        self.reports: list[PruningReport] = []
        self.observers = Observers(observers)
        self._name = f"plphp_{next(_session_ids)}"
        self._hooks: list[Any] = []
        self._original_impl: str | None = None
        self._base_name = ""
        self._base: attn.AttentionFn | None = None
        self._prefill: PrefillState | None = None
        self._cache: Cache | None = None
        check_layer_range(policy, adapter)
        # A collector that reads hidden states is called after its layer: (layer, query, key, scaling) until then.
        self._pending: tuple[int, torch.Tensor, torch.Tensor, float] | None = None
        self._final_norm: torch.nn.Module | None = None
        self._prunable = adapter.prunable_layers()
        self._decode_stage = DecodeStage(policy, self._prunable, materialize, record_scores)
        self._prefill_stage = (
            PrefillStage(policy, adapter, materialize, record_scores) if policy.stage == "prefill" else None
        )
        self._input_stage = InputStage(policy, adapter, materialize, record_scores) if policy.stage == "input" else None

    @property
    def report(self) -> PruningReport | None:
        return self.reports[-1] if self.reports else None

    def subscribe(self, observer: SessionObserver) -> None:
        """Notify `observer` of this session's events from now on (see `plphp.backends.events`)."""
        self.observers.add(observer)

    def unsubscribe(self, observer: SessionObserver) -> None:
        """Stop notifying `observer`."""
        self.observers.remove(observer)

    # -- install / uninstall -------------------------------------------------------------------
    def __enter__(self) -> Session:
        text_config = self.adapter.text_config
        original = text_config._attn_implementation or "sdpa"
        if original.startswith("plphp_"):
            raise PlphpError("this model is already inside a plphp.apply() session; exit it first")
        self._original_impl = text_config._attn_implementation
        self._base_name = original
        self._base = attn.base_attention(original)
        attn.register(self._name, self._attention, original)
        try:
            self.model.set_attn_implementation({self.adapter.text_config_key: self._name})
            self._hooks = [
                self.model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
                self.model.register_forward_hook(self._after_forward, with_kwargs=True),
            ]
            if self.policy.collector.reads_hidden_states:
                self._final_norm = self.adapter.final_norm()
                for idx, layer in enumerate(self.adapter.decoder_layers()):
                    self._hooks.append(layer.register_forward_hook(functools.partial(self._after_layer, idx)))
            if self._input_stage is not None:
                self._hooks += self._input_stage.install(self.model, self._before_decoder, f"{self._name}_vision")
            if self.policy.stage == "prefill":
                for idx, layer in enumerate(self.adapter.decoder_layers()):
                    if idx >= self.policy.start_layer:
                        hook = functools.partial(self._before_layer, idx)
                        self._hooks.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        except BaseException:
            self._uninstall()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._uninstall()

    def _uninstall(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.adapter.text_config._attn_implementation == self._name:
            self.model.set_attn_implementation({self.adapter.text_config_key: self._original_impl})
        if self._input_stage is not None:
            self._input_stage.uninstall(self.model)
        attn.unregister(self._name)
        self._prefill = None
        self._cache = None
        self._pending, self._final_norm = None, None

    # -- driving a prefill by hand -----------------------------------------------------------------
    def begin_prefill(
        self, cache: Cache, input_ids: torch.Tensor, attention_mask: Any = None, **inputs: Any
    ) -> PromptInfo | None:
        """Start a prefill on `cache` without running the model, as the forward pre-hook does.

        For tools that fill a cache themselves (the benchmark's synthetic prefill): call
        `record_stats` for each layer after its keys are in the cache, then `end_prefill`.
        `inputs` are other model inputs the adapter reads (`video_grid_thw` under `segments: frame`).

        Returns:
            The prompt's `PromptInfo`, or None when it holds no vision tokens (nothing to prune).
        """
        kwargs = {**inputs, "input_ids": input_ids, "attention_mask": attention_mask, "past_key_values": cache}
        self._before_forward(self.model, (), kwargs)
        return self._prefill.prompt if self._prefill is not None else None

    def record_stats(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        scaling: float,
        hidden_states: torch.Tensor | None = None,
    ) -> None:
        """Hand one layer's post-RoPE `query` `[B, H, L, D]` and `key` `[B, H_kv, L, D]` to the collector.

        A collector that reads hidden states (`reads_hidden_states`) also needs `hidden_states`
        `[B, L, D_model]`, the layer's output; the session applies the final norm.
        """
        if self._prefill is None:
            return
        if self.policy.collector.reads_hidden_states and hidden_states is None:
            raise PlphpError(
                f"collector {self.policy.collector.name!r} compares tokens by their hidden states: pass "
                "record_stats(..., hidden_states=[B, L, D_model])"
            )
        self._collect(layer_idx, query, key, scaling, hidden_states)

    def end_prefill(self) -> PruningReport | None:
        """Allocate, select and compress, as the forward hook does; returns the new report."""
        self._after_forward(self.model, (), {}, None)
        return self.report

    # -- hooks -----------------------------------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        cache = passed_cache(kwargs)
        if cache is None and kwargs.get("use_cache", self.adapter.text_config.use_cache) is not False:
            cache = DynamicCache(config=self.model.config)
            kwargs = {**kwargs, cache_argument(self.model.forward): cache}
        self._cache = cache if isinstance(cache, Cache) else None
        if self._cache is not None and not isinstance(self._cache, DynamicCache):
            raise PlphpError(
                f"plphp prunes the dynamic KV cache, but this call uses {type(self._cache).__name__}; "
                "drop cache_implementation / cache (past_key_values) from the generate() arguments"
            )
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if self._cache is not None and self._cache.get_seq_length() == 0:
            if self.policy.stage != "decode" and kwargs.get("labels") is not None:
                raise PlphpError(
                    f"labels: a {self.policy.stage}-stage policy ({self.policy.name!r}) drops tokens, so "
                    "their logits do not exist; score with a decode-stage policy (its prefill is exact)"
                )
            self.observers.emit("on_prefill_start", self)
            self._start_prefill(self._cache, input_ids, kwargs.get("attention_mask"), kwargs)
            if self._input_stage is not None:
                self._input_stage.start({**kwargs, "input_ids": input_ids})
            self.observers.emit("on_prompt", self, self._prefill.prompt if self._prefill is not None else None)
        elif self._cache is not None:
            rows = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
            self.observers.emit("on_decode_step", self, rows.shape[0] if rows is not None else 0)
            if self._input_stage is not None:
                kwargs = self._input_stage.decode_kwargs(kwargs)
        return args, kwargs

    def _after_forward(self, module, args, kwargs, output):
        prefill, self._prefill = self._prefill, None
        if prefill is not None:
            self.observers.emit("on_prefill_end", self)
            self.observers.emit("on_compress_start", self)
            # Pruning is inference: keep-sets and compressed caches carry no autograd history.
            if self._input_stage is not None:
                output = self._input_stage.restore_positions(output, prefill)
                self._input_stage.finish(prefill)
                with torch.no_grad():
                    report = self._input_stage.report(prefill)
            elif self._prefill_stage is not None:
                output = self._prefill_stage.restore_positions(output, prefill)  # differentiable
                with torch.no_grad():
                    report = self._prefill_stage.report(prefill)
            else:
                with torch.no_grad():
                    report = self._decode_stage.compress(prefill)
            self.reports.append(report)
            for layer_report in report.layers:
                if layer_report.pruned:
                    layer = prefill.cache.layers[layer_report.layer_idx]
                    self.observers.emit("on_layer_compressed", self, layer_report.layer_idx, layer)
            self.observers.emit("on_compress_end", self, report)
        return output

    def _before_layer(self, layer_idx: int, module, args, kwargs):
        """Pre-hook of a decoder layer from `start_layer` on (prefill stage only)."""
        if self._prefill is None:
            return None
        return self._prefill_stage.before_layer(self._prefill, layer_idx, args, kwargs)

    def _after_layer(self, layer_idx: int, module, args, output):
        """Forward hook of each decoder layer, for a collector that reads hidden states: collect now."""
        pending, self._pending = self._pending, None
        if self._prefill is None or pending is None or pending[0] != layer_idx:
            return None
        self._collect(*pending, hidden_states=output[0] if isinstance(output, tuple) else output)
        return None

    def _before_decoder(self, module, args, kwargs):
        """Pre-hook of the language model (input stage only): only the kept tokens enter it."""
        if self._prefill is None:
            return None
        if args:
            raise PlphpError("the language model was called with positional inputs; the input stage needs keywords")
        return args, self._input_stage.before_language_model(self._prefill, module, kwargs)

    def _collect(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        scaling: float,
        hidden_states: torch.Tensor | None = None,
    ) -> None:
        """Run the collector on one layer of the prefill, between its two events."""
        prefill = self._prefill
        collector = self.policy.collector
        self.observers.emit("on_collect_start", self, layer_idx)
        with torch.no_grad():  # statistics choose tokens; they are not part of the model's output
            extra = {}
            if collector.reads_hidden_states:  # what the LM head would read (docs/architecture.md)
                norm = self._final_norm if self._final_norm is not None else self.adapter.final_norm()
                extra["hidden_states"] = norm(hidden_states)
            stats = collector.collect(query, key, prefill.current, layer_idx, scaling, **extra)
        check_stats(stats, prefill.current, f"collector {self.policy.collector.name!r} (layer {layer_idx})")
        prefill.stats[layer_idx] = stats
        self.observers.emit("on_layer_stats", self, layer_idx, stats)

    # -- prefill ---------------------------------------------------------------------------------
    def _start_prefill(
        self, cache: Cache, input_ids: torch.Tensor | None, attention_mask: Any, inputs: dict[str, Any]
    ) -> None:
        """Set up a prefill; `inputs` are the model call's keyword inputs (`backends.prompt`)."""
        self._prefill = None
        prompt = read_prompt(self.adapter, self.policy, self._prunable, cache, input_ids, attention_mask, inputs)
        if isinstance(prompt, PruningReport):  # nothing to prune, and the report says why
            self.reports.append(prompt)
            return
        self._prefill = PrefillState(prompt=prompt, cache=cache)
        if self._prefill_stage is not None:
            self._prefill_stage.start(self._prefill)

    # -- attention -------------------------------------------------------------------------------
    def _attention(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        layer_idx = getattr(module, "layer_idx", None)
        base = self._base
        if layer_idx is None:
            return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        prefill = self._prefill
        if prefill is not None:
            if query.shape[2] == key.shape[2] and self._input_stage is None:
                if self._final_norm is not None:  # the collector reads the layer's output: see _after_layer
                    self._pending = (layer_idx, query, key, scaling)
                else:
                    self._collect(layer_idx, query, key, scaling)
            shrunk = self._prefill_stage is not None and self._prefill_stage.shrunk(layer_idx)
            if shrunk and not attn.takes_dense_mask(self._base_name):  # flash kernels take no dense mask
                base = attn.base_attention("sdpa")
            return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        layer = self._layer(layer_idx)
        if layer is not None and self._grouped_decode(module, layer, query, key, dropout, kwargs):
            # One query token on a layer plphp owns: each KV head read once (plphp.backends.decode_attention).
            if self.observers:  # they get the mask the kernel applies, as a `[B, 1 or H, 1, L]` bool mask
                mask = layer.attention_mask(1, query.shape[1], None)
                self.observers.emit("on_decode_attention", self, layer_idx, query, key, mask, scaling)
            output = grouped_decode_attention(query, key, value, scaling, layer.valid, layer.invalid_span)
            self.observers.emit("on_decode_attention_end", self, layer_idx, output)
            return output, None
        own_mask = layer is not None and key.shape[-2] == layer.length
        if own_mask and not layer.compressed:
            fits = attention_mask.shape[-1] == key.shape[-2] if attention_mask is not None else layer.valid is None
            own_mask = not fits
        if own_mask:
            additive = attn.uses_additive_mask(self._base_name)
            attention_mask = layer.attention_mask(query.shape[2], query.shape[1], query.dtype if additive else None)
            if attention_mask is not None and not attn.takes_dense_mask(self._base_name):
                # Flash kernels take no dense mask: pruned layers with holes go through sdpa.
                base, kwargs = attn.base_attention("sdpa"), {}
        self.observers.emit("on_decode_attention", self, layer_idx, query, key, attention_mask, scaling)
        output = base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        self.observers.emit("on_decode_attention_end", self, layer_idx, output[0])
        return output

    def _grouped_decode(self, module, layer: PrunableLayer, query, key, dropout: float, kwargs) -> bool:
        """Whether this decode call goes through plphp's grouped one-query kernel: a single query
        token against the layer's whole cache, a layer the `decode_attention` mode routes there, and
        nothing the kernel does not implement (dropout in training, soft-capping, sliding windows,
        attention sinks)."""
        mode = self.decode_attention
        if mode == "model" or query.shape[2] != 1 or key.shape[-2] != layer.length:
            return False
        # The input stage's cache is that of a shorter prompt (every head alike): the model's own attention.
        pruned = layer.compressed and self.materialize == "prune" and self._input_stage is None
        if mode == "pruned" and not pruned:
            return False
        if query.shape[1] % key.shape[1] or (dropout and module.training):
            return False
        return all(kwargs.get(name) is None for name in ("softcap", "sliding_window", "s_aux"))

    def _layer(self, layer_idx: int) -> PrunableLayer | None:
        cache = self._cache
        if cache is None or layer_idx >= len(cache.layers):
            return None
        layer = cache.layers[layer_idx]
        return layer if isinstance(layer, PrunableLayer) else None


def apply(
    model: Any,
    policy: str | Policy | dict | Any = "plphp",
    *,
    materialize: Materialize = "prune",
    record_scores: bool = False,
    observers: Sequence[SessionObserver] = (),
    decode_attention: DecodeAttention = "pruned",
    **overrides: Any,
) -> Session:
    """Prune `model`'s vision-token KV cache with `policy` inside a `with` block.

    Args:
        model: a supported Hugging Face vision-language model (see `plphp policies`).
        policy: a `Policy`, a preset name, a YAML/TOML path or a dict (see `plphp.load_policy`).
        materialize: "prune" removes dropped entries from the cache (the point of the library);
            "mask" keeps them and masks them out, the reference that tests compare against.
        record_scores: keep every layer's token scores in the report (memory grows with the prompt).
        observers: `SessionObserver`s notified of the session's events (`plphp.backends.events`).
        decode_attention: "pruned" (default): decoding steps of pruned layers use plphp's grouped
            one-query kernel, which reads each KV head once; "all": every layer with a plphp cache
            does; "model": the model's own attention everywhere.
        **overrides: merged into the policy config, e.g. `allocator={"retention": 0.3}`.

    Returns:
        A `Session`; the model is restored exactly on exit, also after an exception.

    Examples:
        >>> with plphp.apply(model, "plphp") as session:
        ...     out = model.generate(**inputs, max_new_tokens=64)
        >>> session.report.vision_kv_reduction
    """
    resolved = load_policy(policy, **overrides)
    adapter = get_registry().adapter_for(model)
    if decode_attention != "model" and getattr(getattr(model, "device", None), "type", None) == "cpu":
        native.kernel()  # built once per machine: here, not inside the first decode step
    return Session(
        model,
        resolved,
        adapter,
        materialize=materialize,
        record_scores=record_scores,
        observers=observers,
        decode_attention=decode_attention,
    )
