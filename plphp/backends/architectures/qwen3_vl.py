"""Qwen3-VL and Qwen3.5: Qwen2.5-VL's images and M-RoPE, plus DeepStack (Qwen3-VL) or a hybrid
language model (Qwen3.5).

- **DeepStack** (Qwen3-VL): features of several vision blocks are added to the hidden states at the
  prompt's vision positions after each of the first decoder layers (one layer per block of
  `vision_config.deepstack_visual_indexes`). The prefill stage cannot start at or before the last of
  those layers: a shrunk sequence no longer has the positions the additions are indexed by. The
  decode stage may prune them: prefill is exact, and the cache is pruned once it ends.
- **Interleaved M-RoPE**: the rotary embedding computes cos / sin for every position up front, so a
  shrunk sequence gathers them like Qwen2-VL's (`ModelAdapter.gather_positions`).
- **Hybrid** (Qwen3.5): linear-attention layers (`layer_types`) keep a recurrent state, not a KV
  cache; only the full-attention layers are pruned, and the report lists the others as not pruned.
"""

from __future__ import annotations

from plphp.backends.architectures.qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: Qwen2.5-VL's image tokens and layout, with DeepStack's layers kept whole in prefill."""

    name = "qwen3_vl"
    architectures = ("Qwen3VLForConditionalGeneration", "Qwen3VLModel")

    def deepstack_layers(self) -> list[int]:
        """The decoder layers after which DeepStack adds vision features (the first few, one per block)."""
        blocks = getattr(self.config.vision_config, "deepstack_visual_indexes", None) or ()
        return list(range(min(len(blocks), self.num_layers)))

    def unprunable_layers(self, stage: str) -> dict[int, str]:
        """Besides the base class's: in the prefill and input stages, the DeepStack layers, whose outputs receive vision
        features at every vision position of the prompt (tokens that left could not take them)."""
        out = super().unprunable_layers(stage)
        if stage in ("prefill", "input"):
            for idx in self.deepstack_layers():
                out.setdefault(idx, "adds DeepStack vision features at every vision position of the prompt")
        return out


class Qwen3_5Adapter(Qwen2VLAdapter):
    """Qwen3.5: Qwen3-VL's image tokens; linear-attention layers hold no KV cache (never pruned)."""

    name = "qwen3_5"
    architectures = ("Qwen3_5ForConditionalGeneration", "Qwen3_5Model")

    def unprunable_layers(self, stage: str) -> dict[int, str]:
        """The linear-attention layers (the base class's); in prefill, every layer: the linear layers
        that follow carry a recurrent state over every token, which tokens leaving the sequence
        would change, and they give no statistics to rank the tokens by."""
        out = super().unprunable_layers(stage)
        if stage in ("prefill", "input"):
            for idx in range(self.num_layers):
                out.setdefault(idx, "belongs to a hybrid stack whose linear-attention layers carry every token")
        return out


ADAPTERS = [Qwen3VLAdapter, Qwen3_5Adapter]
