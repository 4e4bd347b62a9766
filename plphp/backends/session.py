"""`plphp.apply(model, policy)`: prune an unmodified model inside an unmodified `generate()`.

How it works (see docs/architecture.md):

1. On entry, an attention function is registered under a name of the session's own and the
   language model's sub-config is switched to it; it wraps the model's implementation (sdpa,
   eager, flash), so outputs are unchanged where nothing is pruned.
2. A forward pre-hook on the model sees each call's cache. At prefill (an empty cache) it puts a
   `PrunableLayer` in place of each decoder layer's cache and reads the vision positions from the
   prompt through the model's adapter.
3. During prefill the attention function hands each layer's post-RoPE queries and keys to the
   policy's collector.
4. A forward hook ends prefill: the decode stage (`plphp.backends.decode_stage`) has the allocator
   set retention per layer and the selector pick each KV head's vision tokens, and compresses the
   cache (or, in "mask" mode, only masks it).
5. During decoding, layers whose length differs from what the model's mask describes attend with
   their own mask.

With a prefill-stage policy (FastV, PyramidDrop, VTW), step 4 happens inside prefill instead: a
forward pre-hook on each decoder layer from `start_layer` on asks the selector, ranking by the
previous layer's statistics, which vision tokens stay; the dropped ones leave the hidden states, and
the layer gets the kept tokens' own RoPE positions and a mask for the shrunk sequence (see
`plphp.backends.prefill_stage`, a stage object the session owns, and `plphp.backends.prefill`).
Later layers' caches hold only the kept tokens. With an input-stage policy (VisionZip, DivPrune,
FasterVLM, pooling) a pre-hook on the language model chooses the vision tokens from vision-side
statistics before its first layer, and only they enter it (`plphp.backends.input_stage`).

Tools observe all of this through the session's events (`plphp.backends.events`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from plphp.backends import attention as attn
from plphp.backends.adapters import ModelAdapter
from plphp.backends.cache import PrunableLayer
from plphp.backends.compat import cache_argument, passed_cache
from plphp.backends.decode_stage import DecodeStage
from plphp.backends.events import Observers, SessionObserver
from plphp.backends.input_stage import InputStage
from plphp.backends.prefill_stage import PrefillStage
from plphp.backends.reporting import PrefillState, empty_report
from plphp.contract import check_stats
from plphp.errors import ConfigError, PlphpError
from plphp.policy import Policy, load_policy
from plphp.registry import get_registry
from plphp.report import PruningReport
from plphp.stats import PromptInfo

_session_ids = itertools.count()


def _check_layer_range(policy: Policy, count: int, prunable: list[bool]) -> None:
    """Refuse a layer range that prunes nothing on a model of `count` layers (`start_layer` past its depth)."""
    if policy.start_layer >= count:
        raise ConfigError(
            f"policy.start_layer: {policy.start_layer} is not a layer of this model, which has {count} decoder "
            f"layers; allowed are 0 to {count - 1}"
        )
    end = min(policy.end_layer or count, count)
    if not any(prunable[policy.start_layer : end]):
        raise ConfigError(
            f"policy.start_layer: layers {policy.start_layer} to {end - 1} of this model all use sliding-window "
            "attention, so nothing would be pruned; start earlier or use another model"
        )


Materialize = Literal["prune", "mask"]


class Session:
    """An active pruning session on one model. Use through `plphp.apply`.

    Args:
        model: the model to prune.
        policy: the composed policy.
        adapter: the model's adapter.
        materialize: "prune" removes entries from the cache; "mask" keeps and masks them.
        record_scores: keep each layer's token scores in the report.
        observers: `SessionObserver`s notified of the session's events (`plphp.backends.events`).

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
    ):
        if materialize not in ("prune", "mask"):
            raise ConfigError(f"materialize: {materialize!r} is not allowed; use 'prune' or 'mask'")
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
        self._prunable = adapter.prunable_layers()
        _check_layer_range(policy, adapter.num_layers, self._prunable)
        self._decode_stage = DecodeStage(policy, self._prunable, materialize, record_scores)
        self._prefill_stage = (
            PrefillStage(policy, adapter, materialize, record_scores) if policy.stage == "prefill" else None
        )
        self._input_stage = InputStage(policy, adapter, materialize, record_scores) if policy.stage == "input" else None
        self._vision_name = f"{self._name}_vision"
        self._original_vision_impl: str | None = None
        if policy.stage in ("prefill", "input"):
            kept_whole = [i for i in range(policy.start_layer, adapter.num_layers) if not self._prunable[i]]
            if kept_whole:
                raise ConfigError(
                    f"policy.stage: {policy.stage!r} drops tokens from every layer from start_layer "
                    f"({policy.start_layer}) on, but layers {kept_whole} of this model use sliding-window "
                    "attention and must keep their tokens; use stage 'decode'"
                )

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
            if self._input_stage is not None:
                language_model = self.adapter.language_model()
                self._hooks.append(language_model.register_forward_pre_hook(self._before_decoder, with_kwargs=True))
                tower = self.adapter.vision_tower()
                if tower is not None:
                    hook = self._input_stage.before_tower
                    self._hooks.append(tower.register_forward_pre_hook(hook, with_kwargs=True))
                projector = self.adapter.vision_projector()
                if projector is not None and self._input_stage.reads_tower:
                    self._hooks.append(projector.register_forward_hook(self._input_stage.after_projector))
                if self._input_stage.reads_tower:
                    self._route_tower_attention()
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
        vision_config = getattr(self.model.config, self.adapter.vision_config_key, None)
        if vision_config is not None and vision_config._attn_implementation == self._vision_name:
            self.model.set_attn_implementation({self.adapter.vision_config_key: self._original_vision_impl})
        attn.unregister(self._name)
        attn.unregister(self._vision_name)
        self._prefill = None
        self._cache = None

    def _route_tower_attention(self) -> None:
        """Send the vision tower's attention through the session's function, which passes it on
        untouched and lets the input stage read one layer's statistic."""
        vision_config = getattr(self.model.config, self.adapter.vision_config_key)
        self._original_vision_impl = vision_config._attn_implementation
        vision_base_name = self._original_vision_impl or "sdpa"
        vision_base = attn.base_attention(vision_base_name)

        def tower_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
            self._input_stage.observe_tower(module, query, key, scaling, kwargs)
            return vision_base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)

        attn.register(self._vision_name, tower_attention, vision_base_name)
        self.model.set_attn_implementation({self.adapter.vision_config_key: self._vision_name})

    # -- driving a prefill by hand -----------------------------------------------------------------
    def begin_prefill(self, cache: Cache, input_ids: torch.Tensor, attention_mask: Any = None) -> PromptInfo | None:
        """Start a prefill on `cache` without running the model, as the forward pre-hook does.

        For tools that fill a cache themselves (the benchmark's synthetic prefill): call
        `record_stats` for each layer after its keys are in the cache, then `end_prefill`.

        Returns:
            The prompt's `PromptInfo`, or None when it holds no vision tokens (nothing to prune).
        """
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "past_key_values": cache}
        self._before_forward(self.model, (), kwargs)
        return self._prefill.prompt if self._prefill is not None else None

    def record_stats(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        """Hand one layer's post-RoPE `query` `[B, H, L, D]` and `key` `[B, H_kv, L, D]` to the collector."""
        if self._prefill is not None:
            self._collect(layer_idx, query, key, scaling)

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
            self._start_prefill(self._cache, input_ids, kwargs.get("attention_mask"))
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

    def _before_decoder(self, module, args, kwargs):
        """Pre-hook of the language model (input stage only): only the kept tokens enter it."""
        if self._prefill is None:
            return None
        if args:
            raise PlphpError("the language model was called with positional inputs; the input stage needs keywords")
        return args, self._input_stage.before_language_model(self._prefill, module, kwargs)

    def _collect(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        """Run the collector on one layer of the prefill, between its two events."""
        prefill = self._prefill
        self.observers.emit("on_collect_start", self, layer_idx)
        with torch.no_grad():  # statistics choose tokens; they are not part of the model's output
            stats = self.policy.collector.collect(query, key, prefill.current, layer_idx, scaling)
        check_stats(stats, prefill.current, f"collector {self.policy.collector.name!r} (layer {layer_idx})")
        prefill.stats[layer_idx] = stats
        self.observers.emit("on_layer_stats", self, layer_idx, stats)

    # -- prefill ---------------------------------------------------------------------------------
    def _start_prefill(self, cache: Cache, input_ids: torch.Tensor | None, attention_mask: Any) -> None:
        self._prefill = None
        if input_ids is None:
            self.reports.append(
                empty_report(self.policy, 0, 0, [], "no input_ids were given, so no vision tokens were found")
            )
            return
        batch, length = input_ids.shape
        key_valid = torch.ones(batch, length, dtype=torch.bool, device=input_ids.device)
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            key_valid = attention_mask[:, -length:].to(device=input_ids.device, dtype=torch.bool)
        padded = not bool(key_valid.all())
        while len(cache.layers) < self.adapter.num_layers:
            cache.layers.append(DynamicLayer())
        for idx in range(self.adapter.num_layers):
            if self._prunable[idx]:
                cache.layers[idx] = PrunableLayer(prompt_valid=key_valid if padded else None)
        vision_mask = self.adapter.vision_mask(input_ids) & key_valid
        if not bool(vision_mask.any()):
            self.reports.append(
                empty_report(
                    self.policy, batch, length, [0] * batch, "the prompt holds no vision tokens; nothing was pruned"
                )
            )
            return
        prompt = PromptInfo(
            vision_mask=vision_mask,
            segment_ids=self.adapter.segment_ids(input_ids, vision_mask),
            key_valid=key_valid,
            num_layers=self.adapter.num_layers,
            num_heads=self.adapter.num_heads,
            num_kv_heads=self.adapter.num_kv_heads,
            head_dim=self.adapter.head_dim,
            layer_range=(self.policy.start_layer, self.policy.end_layer or self.adapter.num_layers),
        )
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
                self._collect(layer_idx, query, key, scaling)
            shrunk = self._prefill_stage is not None and self._prefill_stage.shrunk(layer_idx)
            if shrunk and not attn.takes_dense_mask(self._base_name):  # flash kernels take no dense mask
                base = attn.base_attention("sdpa")
            return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        layer = self._layer(layer_idx)
        own_mask = layer is not None and key.shape[-2] == layer.length
        if own_mask and not layer.compressed:
            fits = attention_mask.shape[-1] == key.shape[-2] if attention_mask is not None else layer.valid is None
            own_mask = not fits
        if not own_mask:
            self.observers.emit("on_decode_attention", self, layer_idx, query, key, attention_mask, scaling)
            return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        additive = attn.uses_additive_mask(self._base_name)
        mask = layer.attention_mask(query.shape[2], query.shape[1], query.dtype if additive else None)
        self.observers.emit("on_decode_attention", self, layer_idx, query, key, mask, scaling)
        if mask is not None and not attn.takes_dense_mask(self._base_name):
            # Flash kernels take no dense mask: pruned layers with holes go through sdpa.
            return attn.base_attention("sdpa")(module, query, key, value, mask, scaling=scaling, dropout=dropout)
        return base(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)

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
    return Session(model, resolved, adapter, materialize=materialize, record_scores=record_scores, observers=observers)
