"""What the tiny-model families (`plphp.models.families`) share: the shrunk language model's settings,
token ids of a tokenizer's specials, and the split of config overrides."""

from __future__ import annotations

from typing import Any

from plphp.models.common import _TEXT_INIT_STD
from plphp.models.tokenizer import _bpe_vocabulary


def vocab_size(specials: tuple[str, ...]) -> int:
    """Vocabulary of the tiny BPE tokenizer with these specials (`plphp.models.tokenizer.build_tokenizer`)."""
    return len(specials) + len(_bpe_vocabulary()[0])


def token_id(specials: tuple[str, ...], token: str) -> int:
    """The id `build_tokenizer(specials, ...)` gives a special token (specials come first, in order)."""
    return specials.index(token)


def text_kwargs(
    specials: tuple[str, ...],
    *,
    num_layers: int,
    hidden_size: int,
    num_heads: int,
    num_kv_heads: int,
    bos: str,
    eos: str,
    pad: str,
) -> dict[str, Any]:
    """A language model shrunk like the first five architectures' (`plphp.models.tiny`): hidden 64,
    4 layers, 4 heads, 2 KV heads by default, MLP twice the width, weights drawn with std 0.2."""
    return {
        "vocab_size": vocab_size(specials),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": hidden_size // num_heads,
        "max_position_embeddings": 4096,
        "initializer_range": _TEXT_INIT_STD,
        "bos_token_id": token_id(specials, bos),
        "eos_token_id": token_id(specials, eos),
        "pad_token_id": token_id(specials, pad),
        "tie_word_embeddings": False,
    }


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`(text, vision, top)` overrides: `text_config__x`, `vision_config__x` and plain names."""
    text, vision, top = {}, {}, {}
    for key, value in overrides.items():
        if key.startswith("text_config__"):
            text[key.removeprefix("text_config__")] = value
        elif key.startswith("vision_config__"):
            vision[key.removeprefix("vision_config__")] = value
        else:
            top[key] = value
    return text, vision, top
