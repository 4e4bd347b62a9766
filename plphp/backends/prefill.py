"""The hidden-state sequence of a prefill-stage prefill, as vision tokens leave it.

From the layer where a prefill-stage policy drops tokens, each sample's sequence holds only its kept
positions, in prompt order, right-aligned (so the last prompt token stays last) and left-padded to
the longest sample. `TokenSequence` records which prompt position each slot holds; the functions
below gather hidden states and position embeddings into the new slots and build the layer mask.
In "mask" mode (the reference) nothing moves: every slot keeps its position and dropped ones are
only marked invalid as keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TokenSequence:
    """The sequence that a prefill-stage layer sees.

    Attributes:
        index: `[B, S]` long, the prompt position each slot holds (0 at padding slots).
        valid: `[B, S]` bool, False at padding slots and (mask mode) at dropped positions.
        present: `[B, L]` bool over prompt positions: the valid tokens still in the sequence.
    """

    index: torch.Tensor
    valid: torch.Tensor
    present: torch.Tensor

    @classmethod
    def whole(cls, key_valid: torch.Tensor) -> TokenSequence:
        """The prompt as it enters the first layer."""
        batch, length = key_valid.shape
        index = torch.arange(length, device=key_valid.device).expand(batch, -1)
        return cls(index=index, valid=key_valid, present=key_valid)

    @property
    def length(self) -> int:
        return self.index.shape[1]

    def keep(self, present: torch.Tensor, move: bool) -> tuple[TokenSequence, torch.Tensor | None]:
        """The sequence holding only the prompt positions where `present` `[B, L]` is True.

        Args:
            present: the positions that stay (a subset of `self.present`).
            move: True to compact the sequence (prune), False to keep every slot in place (mask).

        Returns:
            The new sequence and, when it moved, `[B, S_new]` the old slot each new slot comes from.
        """
        if not move:
            return TokenSequence(
                index=self.index, valid=self.valid & present.gather(1, self.index), present=present
            ), None
        batch, length = present.shape
        positions = torch.arange(length, device=present.device).expand(batch, -1)
        # Invalid positions sort first, kept ones after them in prompt order: right-aligned rows.
        ranked = torch.where(present, positions + length, positions).sort(dim=-1).values
        width = int(present.sum(-1).max())
        ranked = ranked[:, length - width :]
        valid = ranked >= length
        index = torch.where(valid, ranked - length, 0)
        old_slot = torch.zeros(batch, length + 1, dtype=torch.long, device=present.device)
        target = torch.where(self.valid, self.index, length)  # padding slots write to a spare column
        old_slot.scatter_(1, target, torch.arange(self.length, device=present.device).expand(batch, -1))
        source = torch.where(valid, old_slot.gather(1, index), 0)
        return TokenSequence(index=index, valid=valid, present=present), source

    def attention_mask(self) -> torch.Tensor:
        """`[B, 1, S, S]` bool: causal over valid keys. Invalid queries see themselves (no NaN rows)."""
        slots = torch.arange(self.length, device=self.index.device)
        causal = slots[None, :] <= slots[:, None]
        mask = self.valid[:, None, None, :] & causal
        return mask | torch.eye(self.length, dtype=torch.bool, device=self.index.device)

    def to_prompt(self, values: torch.Tensor, fill: int | bool) -> torch.Tensor:
        """Gather a `[B, L]` per-position tensor into `[B, S]` slots (`fill` at invalid slots)."""
        gathered = values.gather(1, self.index)
        return torch.where(self.valid, gathered, torch.full_like(gathered, fill))

    def scatter_scores(self, scores: torch.Tensor, length: int) -> torch.Tensor:
        """Map `[B, H, S]` per-slot scores back to `[B, H, L]` prompt positions (0 where absent)."""
        batch, heads, _ = scores.shape
        out = scores.new_zeros(batch, heads, length + 1)
        target = torch.where(self.valid, self.index, length)[:, None, :].expand(-1, heads, -1)
        out.scatter_(2, target, scores)
        return out[..., :length]


def gather_slots(tensor: torch.Tensor, slots: torch.Tensor, dim: int) -> torch.Tensor:
    """Gather `slots` `[B, S_new]` along `dim` of `tensor`, whose batch dim is `dim - 1` (may be 1).

    Hidden states `[B, S, D]` use `dim=1`; cos / sin `[B|1, S, D]` use `dim=1`; position ids
    `[B|1, S]` or `[n, B|1, S]` use their last dim.
    """
    dim = dim % tensor.dim()
    batch, width = slots.shape
    shape = list(tensor.shape)
    shape[dim - 1] = batch
    expanded = tensor.expand(*shape)
    view = [1] * tensor.dim()
    view[dim - 1], view[dim] = batch, width
    index = slots.reshape(view)
    target = list(expanded.shape)
    target[dim] = width
    return expanded.gather(dim, index.expand(*target))


def restore_logits(output: Any, sequence: TokenSequence, length: int) -> Any:
    """Put a shrunk sequence's per-position logits back at their prompt positions.

    A full forward over a sequence that tokens left returns logits `[B, S, V]` for the kept slots;
    they go back to `[B, L, V]`, with NaN where the token left (and at padding): those logits do not
    exist. Output whose logits are not per slot of `sequence` (`generate()` asks for the last position
    only, which always stays) is returned as it is.
    """
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        return output
    if logits.shape[1] != sequence.length or sequence.length == length:
        return output
    batch, _, vocab = logits.shape
    full = logits.new_full((batch, length + 1, vocab), float("nan"))
    target = torch.where(sequence.valid, sequence.index, length).to(logits.device)
    full.scatter_(1, target[..., None].expand(-1, -1, vocab), logits)
    output.logits = full[:, :length]
    return output
