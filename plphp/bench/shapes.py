"""Named model shapes with random weights, built offline from the real configs' numbers.

Only the language model takes the real shape (layers, widths, heads, vocabulary): it is what
decoding runs and what the KV cache and the bandwidth model depend on. The vision tower is the
project's tiny one, since decoding never runs it; `decode_weight_bytes` counts only what one decode
step reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from plphp.errors import ConfigError


@dataclass(frozen=True)
class ModelShape:
    """The language-model numbers of a released checkpoint.

    Attributes:
        name: the name used on the command line.
        checkpoint: the hub id these numbers come from (its `config.json`).
        arch: the tiny-builder architecture of the same model class.
        layers, hidden, intermediate, heads, kv_heads, vocab: the language model's shape.
        tie_embeddings: whether the LM head shares the input embedding's matrix.
    """

    name: str
    checkpoint: str
    arch: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def kv_bytes_per_token(self, element_size: int) -> int:
        """Key and value bytes one token adds to the cache, over all layers and KV heads."""
        return 2 * self.layers * self.kv_heads * self.head_dim * element_size

    def decode_weight_bytes(self, element_size: int) -> int:
        """Weight bytes one decode step reads: the decoder layers, the final norm and the LM head.

        The input embedding is read for one row per sequence only, so it counts only when tied to
        the LM head (whose whole matrix every step reads).
        """
        d, f, h, hkv, hd = self.hidden, self.intermediate, self.heads, self.kv_heads, self.head_dim
        attention = d * h * hd + h * hd + 2 * (d * hkv * hd + hkv * hd) + h * hd * d  # q,k,v biases (Qwen2)
        mlp = 3 * d * f
        norms = 2 * d
        params = self.layers * (attention + mlp + norms) + d + self.vocab * d
        return params * element_size


SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape(
            "llava-onevision-qwen2-0.5b",
            "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
            "llava_onevision",
            layers=24,
            hidden=896,
            intermediate=4864,
            heads=14,
            kv_heads=2,
            vocab=152000,
            tie_embeddings=True,
        ),
        ModelShape(
            "llava-onevision-qwen2-7b",
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
            "llava_onevision",
            layers=28,
            hidden=3584,
            intermediate=18944,
            heads=28,
            kv_heads=4,
            vocab=152128,
            tie_embeddings=False,
        ),
        ModelShape(
            "qwen2-vl-2b",
            "Qwen/Qwen2-VL-2B-Instruct",
            "qwen2_vl",
            layers=28,
            hidden=1536,
            intermediate=8960,
            heads=12,
            kv_heads=2,
            vocab=151936,
            tie_embeddings=True,
        ),
        ModelShape(
            "qwen2-vl-7b",
            "Qwen/Qwen2-VL-7B-Instruct",
            "qwen2_vl",
            layers=28,
            hidden=3584,
            intermediate=18944,
            heads=28,
            kv_heads=4,
            vocab=152064,
            tie_embeddings=False,
        ),
    )
}

#: Tiny shapes for tests and smoke runs (the tiny builder's defaults).
TINY_SHAPES: dict[str, ModelShape] = {
    f"tiny-{arch.replace('_', '-')}": ModelShape(
        f"tiny-{arch.replace('_', '-')}",
        "(plphp tiny model)",
        arch,
        layers=4,
        hidden=64,
        intermediate=128,
        heads=4,
        kv_heads=2,
        vocab=0,
        tie_embeddings=False,
    )
    for arch in ("llava_onevision", "qwen2_vl", "llava", "llava_next", "qwen2_5_vl")
}


def get_shape(name: str) -> ModelShape:
    """The named shape, or a `ConfigError` listing the names."""
    shapes = {**SHAPES, **TINY_SHAPES}
    if name not in shapes:
        raise ConfigError(f"model: {name!r} is not a named shape; allowed: {', '.join(shapes)} (or a hub id / path)")
    return shapes[name]


def is_named_shape(name: str) -> bool:
    return name in SHAPES or name in TINY_SHAPES


def _overrides(shape: ModelShape, layers: int | None) -> dict[str, Any]:
    if shape.name in TINY_SHAPES:
        return {} if layers is None else {"num_layers": layers}
    return {
        "num_layers": layers or shape.layers,
        "hidden_size": shape.hidden,
        "num_heads": shape.heads,
        "num_kv_heads": shape.kv_heads,
        "text_config__intermediate_size": shape.intermediate,
        "text_config__vocab_size": shape.vocab,
        "text_config__tie_word_embeddings": shape.tie_embeddings,
        "text_config__initializer_range": 0.02,
        "text_config__max_position_embeddings": 32768,
        "tie_word_embeddings": shape.tie_embeddings,
    }


def shape_config(name: str, layers: int | None = None) -> Any:
    """The transformers config of the named shape (no weights built)."""
    from plphp.models import build_tiny_config

    shape = get_shape(name)
    return build_tiny_config(shape.arch, **_overrides(shape, layers))


def build_shape_model(
    name: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu", layers: int | None = None
) -> Any:
    """A random-weight model of the named shape (tiny vision tower), in eval mode.

    Args:
        name: a key of `SHAPES` or `TINY_SHAPES`.
        dtype: parameter dtype.
        device: where to put it.
        layers: fewer decoder layers than the real model (smoke runs); None keeps the real count.
    """
    from plphp.models import build_tiny_model

    shape = get_shape(name)
    if name in TINY_SHAPES:
        return build_tiny_model(shape.arch, seed=0, dtype=dtype, device=device, **_overrides(shape, layers))
    from transformers import AutoModelForImageTextToText

    # Built directly on the device in the target dtype: a 7B shape never exists in float32 on the host.
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(
            shape_config(name, layers), attn_implementation="sdpa", dtype=dtype
        )
    return model.eval()


def shape_of_model(model: Any, name: str) -> ModelShape:
    """The `ModelShape` of any loaded model (for the bandwidth model of hub / local models)."""
    config = model.config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelShape(
        name,
        name,
        model.config.model_type,
        layers=config.num_hidden_layers,
        hidden=head_dim * heads,
        intermediate=getattr(config, "intermediate_size", 0) or 0,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        vocab=config.vocab_size,
        tie_embeddings=bool(getattr(model.config, "tie_word_embeddings", False)),
    )


def decode_weight_bytes(model: Any) -> int:
    """Bytes of the parameters one decode step reads, counted on the real model's tensors.

    Everything in the language model and the LM head, except the input embedding (one row per
    sequence is read) unless it is the LM head's own matrix; the vision tower never runs in decoding.
    """
    decoder = model.get_decoder()
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    seen: set[int] = set()
    total = 0
    for tensor in [*decoder.parameters(), head]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        if tensor is embedding and tensor.data_ptr() != head.data_ptr():
            continue
        total += tensor.numel() * tensor.element_size()
    return total
