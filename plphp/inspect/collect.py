"""What `plphp inspect` measures on one item: per policy, the report, per-head vision attention and recall.

Each item runs as a batch of one: per policy one prefill under `plphp.apply` (one new token: the
report is made when the prefill ends), with a `HeadGamma` observer that turns each layer's
`LayerStats.scores` into every head's attention mass on vision positions; then one unpruned
`generate()` measures the attention recall of all the policies' keep-sets (`recall_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from plphp.backends.events import SessionObserver
from plphp.backends.inputs import chat_inputs
from plphp.backends.recall import recall_for
from plphp.backends.session import apply
from plphp.evaluation.dataset import IMAGE_MARKER, DatasetError, EvalItem
from plphp.policy import Policy
from plphp.report import PruningReport


class HeadGamma(SessionObserver):
    """Per decoder layer, each head's share of the observation window's attention on vision tokens.

    `γ_l` of the report is the mean over heads of these shares (for collectors that measure it;
    NaN elsewhere). Subscribed to one session; `per_head` holds the latest prefill's values.

    Attributes:
        per_head: layer index -> `[B, H_s]` float (NaN where the collector measures no vision attention).
        gamma: layer index -> `[B]` the collector's own `γ`.
    """

    def __init__(self) -> None:
        self.per_head: dict[int, torch.Tensor] = {}
        self.gamma: dict[int, torch.Tensor] = {}
        self._vision: torch.Tensor | None = None

    def on_prompt(self, session: Any, prompt: Any) -> None:
        self.per_head, self.gamma = {}, {}
        self._vision = None if prompt is None else prompt.vision_mask

    def on_layer_stats(self, session: Any, layer_idx: int, stats: Any) -> None:
        scores = stats.scores.float()
        gamma = stats.vision_attention.float().cpu()
        self.gamma[layer_idx] = gamma
        vision = self._vision
        if vision is None or vision.shape[-1] != scores.shape[-1] or bool(gamma.isnan().all()):
            self.per_head[layer_idx] = torch.full(scores.shape[:2], math.nan)
            return
        mass = (scores * vision.to(scores.device)[:, None, :]).sum(-1).cpu()  # [B, H_s]
        # Scores that are no attention distribution (pooled, normalised otherwise) give no per-head share:
        # the heads' shares must average to the collector's own γ.
        if not torch.allclose(mass.mean(1), gamma, rtol=1e-3, atol=1e-4, equal_nan=True):
            mass = torch.full(scores.shape[:2], math.nan)
        self.per_head[layer_idx] = mass


@dataclass
class PolicyRun:
    """One policy on one item (batch of one).

    Attributes:
        report: the session's report.
        gamma: per layer, the layer's `γ` (the report's where it has the layer).
        head_gamma: per layer, per head `γ` (NaN where not measured).
        recall: `[layers, H]` attention recall per layer and query head, None when nothing was pruned
            or recall was not measured.
    """

    report: PruningReport
    gamma: list[float]
    head_gamma: list[list[float]]
    recall: list[list[float]] | None = None


@dataclass
class ItemRun:
    """Every policy on one item.

    Attributes:
        item: the item.
        inputs: the processor's batch of one.
        images: the item's pictures.
        runs: per policy name, its `PolicyRun`.
    """

    item: EvalItem
    inputs: Any
    images: list[Any]
    runs: dict[str, PolicyRun] = field(default_factory=dict)


def item_inputs(processor: Any, item: EvalItem, device: Any) -> tuple[Any, list[Any]]:
    """The batch of one for `item`, as `plphp eval` builds it, and its pictures."""
    images = item.images()
    try:
        return chat_inputs(processor, [(item.question, images)], device, image_marker=IMAGE_MARKER), images
    except (ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise DatasetError(f"cannot build the prompt of {item.where} (id {item.id!r}): {exc}") from None


def inspect_item(
    model: Any,
    processor: Any,
    item: EvalItem,
    policies: dict[str, Policy],
    *,
    recall_tokens: int | None = 8,
) -> ItemRun:
    """Run every policy on `item` and, when `recall_tokens` is set, measure the recall of their keep-sets
    during `recall_tokens` unpruned decoding steps."""
    inputs, images = item_inputs(processor, item, model.device)
    result = ItemRun(item, inputs, images)
    num_layers = None
    for name, policy in policies.items():
        observer = HeadGamma()
        with torch.inference_mode(), apply(model, policy, observers=[observer]) as session:
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        report = session.report
        num_layers = session.adapter.num_layers
        result.runs[name] = PolicyRun(report, *_gammas(report, observer, num_layers))
    pruned = {name: run.report for name, run in result.runs.items() if run.report is not None and run.report.layers}
    if recall_tokens and pruned and any(layer.pruned for r in pruned.values() for layer in r.layers):
        results, _ = recall_for(model, inputs, pruned, max_new_tokens=recall_tokens, do_sample=False)
        for name, recall in results.items():
            if recall.per_step.shape[0]:  # at least one decoding step
                result.runs[name].recall = recall.per_layer_head().tolist()
    return result


def _gammas(report: PruningReport | None, observer: HeadGamma, num_layers: int) -> tuple[list, list]:
    from_report = {layer.layer_idx: float(layer.vision_attention[0]) for layer in (report.layers if report else [])}
    heads = max((t.shape[1] for t in observer.per_head.values()), default=0)
    gamma, per_head = [], []
    for index in range(num_layers):
        if index in from_report:
            gamma.append(from_report[index])
        else:
            value = observer.gamma.get(index)
            gamma.append(float(value[0]) if value is not None else math.nan)
        values = observer.per_head.get(index)
        per_head.append(values[0].tolist() if values is not None else [math.nan] * heads)
    return gamma, per_head


def keep_sets(report: PruningReport | None, vision: list[int], layer: int, heads: int) -> list[set[int]] | None:
    """Per KV head, the vision positions `report` keeps at `layer` (every one where the layer is not
    pruned); None when the report has no such layer."""
    if report is None or layer >= len(report.layers):
        return None
    layer_report = report.layers[layer]
    if not layer_report.pruned or layer_report.kept_positions is None:
        return [set(vision) for _ in range(heads)]
    rows = layer_report.kept_positions[0]
    sets = [{int(p) for p in row if p >= 0} for row in rows]
    return sets * heads if len(sets) == 1 and heads > 1 else sets


def jaccard(a: set[int], b: set[int]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def head_matrix(sets: list[set[int]]) -> list[list[float]]:
    """The heads × heads Jaccard overlap of one layer's keep-sets."""
    return [[jaccard(a, b) for b in sets] for a in sets]


def mean_pairwise(sets: list[set[int]]) -> float:
    """The mean Jaccard overlap over pairs of distinct heads (NaN with one head)."""
    pairs = [jaccard(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))]
    return sum(pairs) / len(pairs) if pairs else math.nan
