"""Scoring continuations on the pruned cache: what likelihood-based (multiple-choice) benchmarks ask.

The context is prefilled under the policy, the cache is compressed as it would be before decoding,
and the continuation's tokens are then scored in one forward pass on that cache. So a
continuation's log-likelihood sees exactly the keys that decoding would see: its first token comes
from the (exact, decode stage) prefill, every later one from the pruned cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from plphp.backends.compat import cache_argument, output_cache, prompt_position_ids
from plphp.backends.session import apply
from plphp.policy import Policy
from plphp.report import PruningReport


@dataclass(frozen=True)
class ContinuationScores:
    """Per sample: the continuation's summed log-probability and whether greedy decoding gives it.

    Attributes:
        logprobs: `[B]` sums of the continuation tokens' log-probabilities (float64 values).
        greedy: `[B]` whether every continuation token is the most likely one.
        token_logprobs: per sample, each continuation token's log-probability.
        report: the pruning report of the context's prefill.
    """

    logprobs: list[float]
    greedy: list[bool]
    token_logprobs: list[list[float]]
    report: PruningReport | None


def continuation_logprobs(
    model: Any,
    inputs: Mapping[str, torch.Tensor],
    continuations: Sequence[Sequence[int]],
    policy: Policy | str,
    *,
    materialize: str = "prune",
    pad_token_id: int = 0,
) -> ContinuationScores:
    """Score `continuations` after the (left-padded) contexts of `inputs`, on the cache the policy leaves.

    Args:
        model: a supported vision-language model.
        inputs: the contexts, as `plphp.backends.inputs.chat_inputs` builds them (left padding).
        continuations: per sample, the continuation's token ids (at least one each).
        policy: the pruning policy (`full` scores on the whole cache).
        materialize: "prune" (remove the dropped keys) or "mask" (keep them, masked to -inf: the
            reference `plphp.testing` compares with).
        pad_token_id: what fills the continuations up to the longest (masked out, never scored).

    Returns:
        The scores, in the order of `continuations`.
    """
    batch = inputs["input_ids"].shape[0]
    if len(continuations) != batch or any(len(tokens) == 0 for tokens in continuations):
        raise ValueError(f"continuation_logprobs: need one non-empty continuation per sample ({batch})")
    device = inputs["input_ids"].device
    width = max(len(tokens) for tokens in continuations)
    ids = torch.full((batch, width), pad_token_id, dtype=torch.long, device=device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=device)
    for b, tokens in enumerate(continuations):
        ids[b, : len(tokens)] = torch.tensor(list(tokens), dtype=torch.long, device=device)
        valid[b, : len(tokens)] = True
    mask = torch.cat([inputs["attention_mask"], valid.to(inputs["attention_mask"].dtype)], dim=1)
    context, continuation = dict(inputs), {}
    positions = _positions(model, inputs, ids, mask)
    if positions is not None:  # as generate() would give them, so left padding and M-RoPE hold
        context["position_ids"], continuation["position_ids"] = positions[..., :-width], positions[..., -width:]
    with torch.inference_mode(), apply(model, policy, materialize=materialize) as session:
        prefill = model(**context, use_cache=True)
        cache = {cache_argument(model.forward): output_cache(prefill)}
        scored = (
            model(input_ids=ids, attention_mask=mask, use_cache=True, **continuation, **cache) if width > 1 else None
        )
    # Token t of the continuation is predicted by the prefill's last position (t = 0) or by
    # continuation position t - 1 (right padding comes after every real token: it changes nothing).
    logits = prefill.logits[:, -1:]
    if scored is not None:
        logits = torch.cat([logits, scored.logits[:, :-1]], dim=1)
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    chosen = logprobs.gather(-1, ids[..., None])[..., 0]
    greedy = (logits.argmax(-1) == ids) | ~valid
    per_token = [chosen[b, : len(tokens)].tolist() for b, tokens in enumerate(continuations)]
    return ContinuationScores(
        logprobs=[float(sum(values)) for values in per_token],
        greedy=[bool(greedy[b].all()) for b in range(batch)],
        token_logprobs=per_token,
        report=session.report,
    )


#: Per-token inputs that a text continuation extends with zeros (as `generate()` does).
_PER_TOKEN = ("mm_token_type_ids", "token_type_ids")


def _positions(model: Any, inputs: Mapping[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> Any:
    """Position ids of context plus continuation, as one prompt (`prompt_position_ids`)."""
    whole = dict(inputs, input_ids=torch.cat([inputs["input_ids"], ids], dim=1), attention_mask=mask)
    for key in _PER_TOKEN:
        if isinstance(inputs.get(key), torch.Tensor):
            whole[key] = torch.cat([inputs[key], inputs[key].new_zeros(ids.shape)], dim=1)
    return prompt_position_ids(model, whole)
