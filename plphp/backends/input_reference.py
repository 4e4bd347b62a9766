"""The input stage's reference (docs/architecture.md, "The correctness contract"): the model run on
`inputs_embeds` that hold only what entered the decoder, as `plphp.testing` and the tests compare."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from plphp.ops import merge_features
from plphp.registry import get_registry


def decoder_inputs(model: Any, inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The language model's keyword inputs at the prefill of a plain `generate()` (the model's own
    embedding of the prompt, vision features in place, and the positions generate gives it)."""
    seen: dict[str, Any] = {}

    def keep_first(module, args, kwargs):
        if not seen:
            seen.update(kwargs)

    handle = get_registry().adapter_for(model).language_model().register_forward_pre_hook(keep_first, with_kwargs=True)
    try:
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False, max_new_tokens=1)
    finally:
        handle.remove()
    return seen


def input_reference(
    model: Any, inputs: Mapping[str, torch.Tensor], report: Any, positions: str, new_tokens: int = 4
) -> Any:
    """The input stage's reference: the model run on `inputs_embeds` holding only what entered the decoder.

    The model's own embedding of the prompt (`decoder_inputs`), merged where the report says so, is
    gathered at `report.input_positions`; with `positions="original"` the original position ids are
    gathered too and passed explicitly (M-RoPE's 3-D ids included), with "compact" `generate()`
    numbers the shorter sequence itself.
    """
    seen = decoder_inputs(model, inputs)
    embeds = seen["inputs_embeds"]
    if report.merge_assignment is not None:
        embeds = merge_features(embeds, report.merge_assignment.to(embeds.device))
    slots = report.input_positions.to(embeds.device)
    valid = slots >= 0
    index = slots.clamp(min=0)
    kept = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1])) * valid[..., None]
    extra: dict[str, Any] = {}
    if positions == "original":
        ids = seen.get("position_ids")
        if ids is None:
            ids = torch.arange(embeds.shape[1], device=embeds.device)[None].expand(embeds.shape[0], -1)
        ids = ids.expand(*ids.shape[:-2], embeds.shape[0], -1)
        extra["position_ids"] = ids.gather(-1, index.expand(*ids.shape[:-2], -1, -1))
    with torch.inference_mode():
        return model.generate(
            inputs_embeds=kept,
            attention_mask=valid.long(),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            output_logits=True,
            return_dict_in_generate=True,
            **extra,
        )
