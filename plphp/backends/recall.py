"""Attention recall: a label-free measure of what a policy's keep-sets would cost the model.

During unpruned decoding, each step's attention (per layer and query head) is a distribution over
the cache. The **attention recall** of a policy is the share of that mass on the entries the policy
keeps: text, generated tokens and the vision tokens its keep-set holds for the head's KV group.
It is 1.0 for `full`, lies in [0, 1], and needs no labels, so it works on any model.

How: `RecallMeter` observes a session with the `full` policy (the cache stays whole, the tokens are
those of plain `generate()`) through its `on_decode_attention` event and computes, at every
decoding step, the softmax attention of the full cache and the mass on each policy's dropped vision
positions. Keep-sets come from the reports of pruned runs on the same prompts (`dropped_positions`);
prefill is the same in both runs, so the keep-sets are the ones the pruned run used. `recall_for` is
the one entry point; `measure_recall` runs the pruned prefill first and then calls it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from plphp.backends.events import SessionObserver
from plphp.backends.session import apply
from plphp.ops import scatter_mask
from plphp.registry import get_registry
from plphp.report import PruningReport


def kept_attention_share(
    query: torch.Tensor,
    key: torch.Tensor,
    dropped: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
) -> torch.Tensor:
    """One minus the softmax attention mass on dropped keys, averaged over the queries.

    Args:
        query: `[B, H, q, D]` post-RoPE queries.
        key: `[B, H_kv, kv, D]` keys of the whole cache (H is a multiple of H_kv: grouped-query attention).
        dropped: `[B, H_kv, kv]` bool, True where the policy removed the entry of that KV head.
        mask: the attention mask the model uses, bool (True = visible) or additive, broadcastable to
            `[B, H, q, kv]`; None when every key is visible.
        scaling: the softmax scale (`1/√D` usually).

    Returns:
        `[B, H]` recall per sample and query head, in [0, 1].
    """
    groups = query.shape[1] // key.shape[1]
    logits = (query.float() @ key.float().repeat_interleave(groups, dim=1).transpose(2, 3)) * scaling
    if mask is not None:
        mask = mask[..., : key.shape[-2]]
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    weights = torch.softmax(logits, dim=-1)  # [B, H, q, kv]
    on_dropped = dropped.repeat_interleave(groups, dim=1)[:, :, None, :].to(weights.dtype)
    mass = (weights * on_dropped).sum(-1).mean(-1)
    return (1.0 - mass).clamp(0.0, 1.0)


def dropped_positions(
    report: PruningReport, vision_mask: torch.Tensor, key_valid: torch.Tensor | None = None
) -> list[torch.Tensor | None]:
    """Per layer, the prompt's vision positions a policy removed: `[B, H_kv, L]` bool, None if none.

    Args:
        report: the pruned run's report (its `kept_positions` per layer).
        vision_mask: `[B, L]` bool vision positions of the prompt.
        key_valid: `[B, L]` bool, False at padding (padding is never counted as dropped).
    """
    vision = vision_mask if key_valid is None else vision_mask & key_valid.bool()
    if report.batch_size and report.batch_size != vision.shape[0]:  # beams / num_return_sequences
        vision = vision.repeat_interleave(report.batch_size // vision.shape[0], dim=0)
    masks: list[torch.Tensor | None] = []
    for layer in report.layers:
        if not layer.pruned or layer.kept_positions is None:
            masks.append(None)
            continue
        kept = scatter_mask(layer.kept_positions.to(vision.device), vision.shape[-1])
        masks.append(vision[:, None, :] & ~kept)
    return masks


@dataclass
class RecallResult:
    """Attention recall of one policy over one `generate()` call.

    Attributes:
        per_step: `[T, B, layers, H]` recall per decoding step, sample, layer and query head (1.0
            where the policy keeps the whole layer). T counts the forward passes after prefill.
    """

    per_step: torch.Tensor

    def _weights(self, valid: torch.Tensor | None) -> torch.Tensor:
        steps, batch = self.per_step.shape[:2]
        if valid is None:
            return torch.ones(steps, batch)
        return valid[:steps].float().reshape(steps, batch)

    def per_sample_layer(self, valid: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, layers]` mean over the (valid) steps and the heads; NaN for a sample with no step.

        Args:
            valid: `[T, B]` bool, which steps count (e.g. before the sample's end of answer).
        """
        weights = self._weights(valid)[:, :, None]
        per_layer = self.per_step.mean(-1)  # [T, B, layers]
        return (per_layer * weights).sum(0) / weights.sum(0)

    def per_layer_head(self, valid: torch.Tensor | None = None) -> torch.Tensor:
        """`[layers, H]` mean over the (valid) steps and the samples, per layer and query head."""
        weights = self._weights(valid)[:, :, None, None]
        per_sample = (self.per_step * weights).sum(0) / weights.sum(0)  # [B, layers, H]
        return per_sample.nanmean(0)

    def per_layer(self, valid: torch.Tensor | None = None) -> torch.Tensor:
        """`[layers]` mean over samples (those with at least one valid step)."""
        table = self.per_sample_layer(valid)
        return table.nanmean(0)

    def overall(self, valid: torch.Tensor | None = None) -> float:
        """One number: the mean over samples, layers and heads of the per-step recall."""
        return float(self.per_sample_layer(valid).nanmean()) if self.per_step.numel() else 1.0


class RecallMeter(SessionObserver):
    """Measures, during unpruned decoding, the attention recall of one or more policies' keep-sets.

    Subscribe it to a session of the `full` policy (the cache stays whole, the tokens are those of
    plain `generate()`); `recall_for` does that.

    Args:
        dropped: per policy name, one `[B, H_kv, L]` bool mask (or None) per decoder layer, from
            `dropped_positions`; B is the batch of the `generate()` call before beam expansion.

    Attributes:
        results: per policy name, the `RecallResult` of the latest `generate()` call.
    """

    def __init__(self, dropped: Mapping[str, Sequence[torch.Tensor | None]]):
        self.dropped = {name: list(masks) for name, masks in dropped.items()}
        self._steps: dict[str, list[torch.Tensor]] = {name: [] for name in self.dropped}
        self._current: dict[str, torch.Tensor] | None = None
        self._shape: tuple[int, int] = (0, 0)  # (layers, query heads)

    @property
    def results(self) -> dict[str, RecallResult]:
        out = {}
        for name, steps in self._steps.items():
            out[name] = RecallResult(torch.stack(steps) if steps else torch.ones(0, 0, *self._shape))
        return out

    def on_prefill_start(self, session: Any) -> None:  # a new generate() call
        self._shape = (session.adapter.num_layers, session.adapter.num_heads)
        self._steps = {name: [] for name in self.dropped}
        self._current = None

    def on_decode_step(self, session: Any, batch_size: int) -> None:
        self._current = {name: torch.ones(batch_size, *self._shape) for name in self.dropped}
        for name, row in self._current.items():
            self._steps[name].append(row)

    def on_decode_attention(self, session, layer_idx, query, key, attention_mask, scaling) -> None:
        if self._current is None:
            return
        for name, masks in self.dropped.items():
            dropped = masks[layer_idx] if layer_idx < len(masks) else None
            if dropped is None:
                continue
            dropped = dropped.to(key.device)
            if dropped.shape[0] != query.shape[0]:  # beams / num_return_sequences expand the batch
                dropped = dropped.repeat_interleave(query.shape[0] // dropped.shape[0], dim=0)
            padded = torch.zeros(*dropped.shape[:2], key.shape[-2], dtype=torch.bool, device=key.device)
            padded[..., : dropped.shape[-1]] = dropped
            share = kept_attention_share(query, key, padded, attention_mask, scaling)
            self._current[name][:, layer_idx, :] = share.cpu()


def recall_for(
    model: Any, inputs: Mapping[str, Any], reports: Mapping[str, PruningReport | None], **generate_kwargs: Any
) -> tuple[dict[str, RecallResult], torch.Tensor]:
    """The attention recall of several pruned runs' keep-sets, in one unpruned `generate()` on `inputs`.

    The one recall pipeline of plphp: the demo, `plphp eval` and `measure_recall` use it.

    Args:
        model: a supported model.
        inputs: the processor's output the pruned runs generated from (`input_ids`, `attention_mask`, ...).
        reports: per name, the report of a pruned run on `inputs` (None, or a report without layers:
            nothing pruned; such names are left out of the result).
        **generate_kwargs: passed to `generate()`.

    Returns:
        `(results, output_ids)`: per name a `RecallResult`, and the tokens of plain `generate()`.
    """
    adapter = get_registry().adapter_for(model)
    input_ids = inputs["input_ids"]
    vision_mask = adapter.vision_mask(input_ids)
    key_valid = inputs.get("attention_mask")
    dropped = {
        name: dropped_positions(report, vision_mask, key_valid)
        for name, report in reports.items()
        if report is not None and report.layers
    }
    meter = RecallMeter(dropped)
    with torch.inference_mode(), apply(model, "full", observers=[meter]):
        output = model.generate(**inputs, **generate_kwargs)
    return meter.results, output


def measure_recall(
    model: Any, policy: Any, inputs: Mapping[str, Any], **generate_kwargs: Any
) -> tuple[RecallResult, PruningReport, torch.Tensor]:
    """The attention recall of `policy` on `inputs`, during unpruned `generate()`.

    Runs prefill once under the policy (`max_new_tokens=1`) to get its keep-sets, then generates
    unpruned while measuring (`recall_for`). The returned tokens are those of plain `generate()`.

    Args:
        model: a supported model.
        policy: anything `plphp.load_policy` takes.
        inputs: the processor's output (`input_ids`, `attention_mask`, pixel values, ...).
        **generate_kwargs: passed to both `generate()` calls (`max_new_tokens` only to the second).

    Returns:
        `(recall, report, output_ids)`.
    """
    with torch.inference_mode(), apply(model, policy) as session:
        model.generate(**inputs, **{**generate_kwargs, "max_new_tokens": 1})
    report = session.report
    results, output = recall_for(model, inputs, {"policy": report}, **generate_kwargs)
    layers, heads = session.adapter.num_layers, session.adapter.num_heads
    return results.get("policy", RecallResult(torch.ones(0, 0, layers, heads))), report, output
