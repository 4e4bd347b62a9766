"""A KV-cache layer whose length is its own: pruned layers physically hold fewer entries.

`PrunableLayer` replaces `DynamicLayer` in the cache that `generate()` creates. It stores keys and
values in a preallocated buffer (no concatenation of the whole cache per step), reports the
logical length (tokens seen) from `get_seq_length` so positions stay absolute, and the physical
length from `get_mask_sizes`. Where a slot can hold nothing real (left padding kept in an
uncompressed layer, or the short rows of a batch whose samples keep different counts) it carries a
validity mask, from which the backend builds the layer's own attention mask.

The decode fast path: compression gathers the kept entries straight into a buffer with `GROWTH`
spare slots (so the first decode steps copy nothing), and the one-query decode mask is kept per
layer and extended by one slot per step instead of being rebuilt from the validity every step.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from plphp.backends.decode_attention import invalid_span

#: Extra slots allocated whenever a layer's buffer grows during decoding.
GROWTH = 128


class PrunableLayer(DynamicLayer):
    """One decoder layer's cache, `[B, H_kv, slots, D]` keys and values plus optional validity.

    Args:
        prompt_valid: `[B, L]` bool, False at padding of the prompt; None when there is none.
    """

    def __init__(self, prompt_valid: torch.Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        self._prompt_valid = prompt_valid
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._valid_buffer: torch.Tensor | None = None  # [B, 1 or H_kv, capacity] bool, or None
        self.length = 0  # physical slots in use
        self.seen = 0  # logical tokens seen (absolute position of the next token)
        self.compressed = False
        # One-query decode masks, `[B, 1 or heads, 1, capacity]`, keyed by (heads, dtype or None).
        self._decode_masks: dict[tuple[int, torch.dtype | None], torch.Tensor] = {}
        self._invalid_span: tuple[int, int] | None | bool = False  # False: not computed since the last change

    # -- state -------------------------------------------------------------------------------
    @property
    def valid(self) -> torch.Tensor | None:
        """`[B, 1 or H_kv, length]` bool validity of the slots in use, or None when all are valid."""
        return None if self._valid_buffer is None else self._valid_buffer[..., : self.length]

    @property
    def invalid_span(self) -> tuple[int, int] | None:
        """`[lo, hi)`: the slots in use outside which every row is valid; None when all slots are.

        Computed once per compression, reordering or growth (appended slots are always valid), so
        the decode kernel masks only the columns where rows differ."""
        if self._invalid_span is False:
            self._invalid_span = invalid_span(self.valid)
        span = self._invalid_span
        if span is None or span[0] >= self.length:
            return None
        return span[0], min(span[1], self.length)

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values in use (`length` slots per head)."""
        if self._key_buffer is None:
            return 0
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    @property
    def allocated_nbytes(self) -> int:
        """Bytes of the buffers holding the keys and values, spare slots included."""
        if self._key_buffer is None:
            return 0
        buffers = (self._key_buffer, self._value_buffer)
        return sum(buffer.numel() * buffer.element_size() for buffer in buffers)

    def _set(
        self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None, length: int | None = None
    ) -> None:
        """Adopt tensors as the buffers (no copy); the first `length` slots (default: all) are in use."""
        self._key_buffer, self._value_buffer, self._valid_buffer = keys, values, valid
        self.length = keys.shape[-2] if length is None else length
        self._forget_masks()
        self._publish()

    def _forget_masks(self) -> None:
        """Drop what was derived from the validity (the decode masks and the invalid span)."""
        self._decode_masks.clear()
        self._invalid_span = False

    def _publish(self) -> None:
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]

    def _reserve(self, extra: int) -> None:
        """Make room for `extra` more slots, growing the buffers by at least `GROWTH`."""
        capacity = self._key_buffer.shape[-2]
        if self.length + extra <= capacity:
            return
        new_capacity = self.length + max(extra, GROWTH)

        def grow(buffer: torch.Tensor, fill) -> torch.Tensor:
            shape = (*buffer.shape[:2], new_capacity, *buffer.shape[3:])
            out = buffer.new_full(shape, fill) if fill is not None else buffer.new_empty(shape)
            out[:, :, : self.length] = buffer[:, :, : self.length]
            return out

        self._key_buffer = grow(self._key_buffer, None)
        self._value_buffer = grow(self._value_buffer, None)
        if self._valid_buffer is not None:
            self._valid_buffer = grow(self._valid_buffer, True)
        self._forget_masks()

    # -- the CacheLayerMixin interface ---------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._key_buffer is None:
            # The prompt: adopt the tensors as they are, validity from the padding mask.
            valid = None
            if self._prompt_valid is not None and not bool(self._prompt_valid.all()):
                valid = self._prompt_valid[:, None, :].to(key_states.device).clone()
            self._set(key_states, value_states, valid)
        else:
            self._reserve(new)
            end = self.length + new
            self._key_buffer[:, :, self.length : end] = key_states
            self._value_buffer[:, :, self.length : end] = value_states
            if self._valid_buffer is not None:
                self._valid_buffer[..., self.length : end] = True
            for (_, dtype), mask in self._decode_masks.items():
                mask[..., self.length : end] = True if dtype is None else 0
            self.length = end
            self._publish()
        self.seen += new
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = self._valid_buffer = None
        self.length = self.seen = 0
        self.compressed = False
        self._forget_masks()
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or self._key_buffer is None:
            return
        count = -tokens_to_remove
        if count > self.length:
            raise ValueError(f"cannot crop {count} tokens from a layer holding {self.length}")
        self.length -= count
        self.seen -= count
        self._publish()

    def _index_batch(self, index_fn) -> None:
        if self._key_buffer is None:
            return
        self._key_buffer = index_fn(self._key_buffer[:, :, : self.length])
        self._value_buffer = index_fn(self._value_buffer[:, :, : self.length])
        if self._valid_buffer is not None:
            self._valid_buffer = index_fn(self._valid_buffer[..., : self.length])
        self._forget_masks()
        self._publish()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self._key_buffer is not None:
            index = beam_idx.to(self._key_buffer.device)
            self._index_batch(lambda t: t.index_select(0, index))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._index_batch(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._index_batch(lambda t: t[indices])

    # -- pruning -----------------------------------------------------------------------------
    def compress(self, positions: torch.Tensor, slot_valid: torch.Tensor) -> None:
        """Keep, per (sample, KV head), the prompt entries at `positions`.

        Args:
            positions: `[B, H_kv, n]` long prompt positions to keep, ascending per row (entries of
                invalid slots may point anywhere).
            slot_valid: `[B, H_kv, n]` bool, False at slots that hold nothing (short rows).
        """
        batch, kv_heads, kept = positions.shape
        head_dim = self.keys.shape[-1]
        index = positions[..., None].expand(-1, -1, -1, head_dim)
        # Gather straight into buffers with room to grow: decoding then appends without a copy.
        capacity = kept + GROWTH
        keys = self.keys.new_empty(batch, kv_heads, capacity, head_dim)
        values = self.values.new_empty(batch, kv_heads, capacity, head_dim)
        torch.gather(self.keys, 2, index, out=keys[:, :, :kept])
        torch.gather(self.values, 2, index, out=values[:, :, :kept])
        if bool(slot_valid.all()):
            valid = None
        else:
            rows = slot_valid[:, :1] if bool((slot_valid == slot_valid[:, :1]).all()) else slot_valid
            valid = rows.new_ones(*rows.shape[:2], capacity)
            valid[..., :kept] = rows
        self._set(keys, values, valid, length=kept)
        self.compressed = True

    def restrict(self, keep_mask: torch.Tensor) -> None:
        """Mask out, per (sample, KV head), the prompt entries where `keep_mask` `[B, H_kv, L]` is
        False, keeping every entry in place: the masked reference that pruning must equal."""
        valid = keep_mask.clone()
        if self._valid_buffer is not None:
            valid &= self._valid_buffer[..., : self.length]
        self._set(self.keys, self.values, valid)
        self.compressed = True

    def attention_mask(self, query_length: int, num_heads: int, dtype: torch.dtype | None) -> torch.Tensor | None:
        """The layer's own mask for `query_length` new queries: valid slots, causal among the new.

        Returns:
            None when every slot is visible to a single query; otherwise `[B, 1 or num_heads, q, length]`,
            bool when `dtype` is None, else additive (0 / most negative value of `dtype`).
        """
        valid = self.valid
        if valid is None and query_length == 1:
            return None
        if query_length == 1:
            return self._decode_mask(num_heads, dtype)
        batch = self.keys.shape[0]
        device = self.keys.device
        if valid is None:
            valid = torch.ones(batch, 1, self.length, dtype=torch.bool, device=device)
        slots = torch.arange(self.length, device=device)
        first_new = self.length - query_length
        causal = slots[None, :] <= (first_new + torch.arange(query_length, device=device))[:, None]  # [q, length]
        mask = valid[:, :, None, :] & causal  # [B, Hv, q, length]
        if mask.shape[1] > 1 and mask.shape[1] != num_heads:
            mask = mask.repeat_interleave(num_heads // mask.shape[1], dim=1)
        if dtype is None:
            return mask
        return torch.where(mask, torch.zeros((), dtype=dtype, device=device), torch.finfo(dtype).min)

    def _decode_mask(self, num_heads: int, dtype: torch.dtype | None) -> torch.Tensor:
        """The one-query mask `[B, 1 or num_heads, 1, length]`, a view of a per-layer buffer that
        `update` extends by one visible slot per step (built once per compression or growth)."""
        key = (num_heads, dtype)
        mask = self._decode_masks.get(key)
        if mask is None:
            valid = self._valid_buffer[:, :, None, :]  # [B, Hv, 1, capacity]
            if valid.shape[1] > 1 and valid.shape[1] != num_heads:
                valid = valid.repeat_interleave(num_heads // valid.shape[1], dim=1)
            if dtype is None:
                mask = valid.clone()
            else:
                mask = torch.where(valid, torch.zeros((), dtype=dtype, device=valid.device), torch.finfo(dtype).min)
            self._decode_masks[key] = mask
        return mask[..., : self.length]
