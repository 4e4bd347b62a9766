"""What calibration measures on a model: prefills under a policy (γ, prompts, reports), the vision-KV
retention a candidate would reach, and attention recall.

A prefill alone (`max_new_tokens=1`) gives every layer's `γ` and, once compressed, the kept counts;
`predict_kept` replays the policy's own allocator and `plphp.ops.budget_per_sample` (the ⌈r·N⌉
rounding per image) on recorded `γ` and prompts, so solving `r` costs no forward pass; each solved
candidate is then checked against a real prefill's report (`kept_per_item`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from plphp.backends.events import SessionObserver
from plphp.backends.recall import recall_for
from plphp.backends.session import apply
from plphp.evaluation.dataset import EvalItem
from plphp.evaluation.runner import build_inputs
from plphp.ops import budget_per_sample
from plphp.policy import Policy
from plphp.report import PruningReport
from plphp.stats import LayerStats, PromptInfo

#: Called with (stage, done, total) as batches finish.
Progress = Callable[[str, int, int], None]


@dataclass
class Batch:
    """One left-padded batch of calibration items and the processor's output for it."""

    items: list[EvalItem]
    inputs: Any


def make_batches(processor: Any, items: Sequence[EvalItem], batch_size: int, device: Any) -> list[Batch]:
    """The items in batches of `batch_size`, prompts built once (pictures decoded here)."""
    return [
        Batch(
            list(items[start : start + batch_size]), build_inputs(processor, items[start : start + batch_size], device)
        )
        for start in range(0, len(items), batch_size)
    ]


class _PromptRecorder(SessionObserver):
    """Keeps the `PromptInfo` of the latest prefill (vision positions and images per sample)."""

    def __init__(self) -> None:
        self.prompt: PromptInfo | None = None

    def on_prompt(self, session: Any, prompt: PromptInfo | None) -> None:
        self.prompt = prompt


def prefill(model: Any, batch: Batch, policy: Policy) -> tuple[PruningReport, PromptInfo | None]:
    """One prefill of `batch` under `policy` (`max_new_tokens=1`): its report and its prompt."""
    recorder = _PromptRecorder()
    with torch.inference_mode(), apply(model, policy, observers=[recorder]) as session:
        model.generate(**batch.inputs, max_new_tokens=1, do_sample=False, num_beams=1)
    return session.report, recorder.prompt


def kept_per_item(report: PruningReport, batch: Batch) -> list[float]:
    """Per item, its share of vision KV entries kept over every layer (`PruningReport.kv_bytes_per_sample`):
    an item alone in a batch has exactly its report's `vision_kept_fraction`."""
    lengths = batch.inputs["attention_mask"].sum(-1).tolist()
    return report.kv_bytes_per_sample(lengths)[2]


@dataclass
class Probe:
    """What one collector measured on every batch: per batch the prompt and `γ` `[layers, B]`.

    Attributes:
        prompts: per batch, its `PromptInfo` (None: no vision token in the batch).
        gamma: per batch, `[num_layers, B]` float `γ` per layer and sample (NaN where not measured).
        pruned: per layer, whether the base policy's range prunes it.
    """

    prompts: list[PromptInfo | None]
    gamma: list[torch.Tensor]
    pruned: list[bool]

    @property
    def per_item(self) -> torch.Tensor:
        """`[items, num_layers]` γ of every item and layer."""
        return torch.cat([g.T for g in self.gamma]) if self.gamma else torch.zeros(0, 0)


def probe(model: Any, batches: Sequence[Batch], policy: Policy, progress: Progress | None = None) -> Probe:
    """Prefill every batch under `policy` and record its prompts and `γ` (the collector's, per layer)."""
    prompts, gamma, pruned = [], [], []
    for index, batch in enumerate(batches):
        report, prompt = prefill(model, batch, policy)
        prompts.append(prompt)
        size = len(batch.items)
        layers = [layer.vision_attention.float().cpu()[:size] for layer in report.layers]
        gamma.append(torch.stack(layers) if layers else torch.zeros(0, size))
        pruned = [layer.pruned or policy.prunes_layer(layer.layer_idx) for layer in report.layers] or pruned
        if progress is not None:
            progress("measuring γ", index + 1, len(batches))
    return Probe(prompts=prompts, gamma=gamma, pruned=pruned)


def predict_kept(measured: Probe, policy: Policy) -> list[float]:
    """Per item, the vision-KV share `policy` would keep, from the recorded `γ` and prompts: the policy's
    allocator (and layer range) and `budget_per_sample`, exactly as a session applies them."""
    kept: list[float] = []
    for prompt, gamma in zip(measured.prompts, measured.gamma):
        if prompt is None:
            kept.extend([1.0] * gamma.shape[1])
            continue
        stats = [LayerStats(scores=torch.zeros(0), vision_attention=g) for g in gamma]
        rates = policy.retention(stats, prompt).cpu()
        num_vision = prompt.vision_mask.sum(-1).tolist()
        totals = [0.0] * prompt.batch_size
        for layer in range(rates.shape[0]):
            for b, budget in enumerate(budget_per_sample(rates[layer], prompt)):
                totals[b] += budget / num_vision[b] if num_vision[b] else 1.0
        kept.extend(total / rates.shape[0] for total in totals)
    return kept


def stop_ids(model: Any, processor: Any) -> set[int]:
    """Token ids that end an answer (the model's and the tokenizer's end and padding ids)."""
    ids: set[int] = set()
    tokenizer = getattr(processor, "tokenizer", processor)
    values = (
        model.generation_config.eos_token_id,
        model.generation_config.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def recall_per_item(
    model: Any, batch: Batch, reports: Mapping[str, PruningReport], max_new_tokens: int, stops: set[int]
) -> dict[str, list[float]]:
    """Per name, each item's attention recall, all names measured in ONE unpruned `generate()` (`recall_for`).

    A step counts while the item's unpruned answer runs (up to its first stop token); an item whose
    answer ends at its first token counts its first step. Layers a policy keeps whole count 1.0.
    """
    results, output = recall_for(
        model, batch.inputs, reports, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1
    )
    new_tokens = output[:, batch.inputs["input_ids"].shape[1] :].tolist()
    size = len(batch.items)
    out: dict[str, list[float]] = {}
    for name in reports:
        result = results.get(name)
        if result is None:
            out[name] = [1.0] * size
            continue
        steps = result.per_step.shape[0]
        valid = torch.zeros(steps, size, dtype=torch.bool)
        for b, row in enumerate(new_tokens):
            length = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
            valid[: max(length - 1, 1), b] = True
        out[name] = [float(v) for v in result.per_sample_layer(valid).mean(-1)]
    return out
