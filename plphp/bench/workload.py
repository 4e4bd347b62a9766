"""What `plphp bench` measures: the workload, the variants, and the prompt ids built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from plphp.errors import ConfigError

PrefillMode = Literal["synthetic", "real"]
UNPRUNED = "unpruned"
#: The kernel baseline: `full` with every layer through plphp's grouped decode kernel.
FULL_FAST = "full-fast"


@dataclass(frozen=True)
class Workload:
    """What each run processes.

    Attributes:
        batch: sequences decoded together.
        vision_tokens: vision tokens per sequence.
        text_tokens: text tokens per sequence (prompt length = text + vision).
        images: vision blocks per sequence (the vision tokens split between them).
        new_tokens: decode steps.
    """

    batch: int = 1
    vision_tokens: int = 6000
    text_tokens: int = 64
    images: int = 1
    new_tokens: int = 64

    def __post_init__(self):
        for name in ("batch", "vision_tokens", "images", "new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')}: {getattr(self, name)} is not allowed; it must be >= 1")
        if self.text_tokens < 2:
            raise ConfigError(f"text-tokens: {self.text_tokens} is not allowed; it must be >= 2")
        if self.images > self.vision_tokens:
            raise ConfigError(f"images: {self.images} is more than the {self.vision_tokens} vision tokens")

    @property
    def prompt_length(self) -> int:
        return self.text_tokens + self.vision_tokens + (self.images - 1)


@dataclass
class Variant:
    """One thing measured: the unpruned reference (policy None) or a policy.

    Attributes:
        label: the name in tables ("unpruned", a preset name, or "retention=0.3").
        policy: a resolved `plphp.policy.Policy`, None for the unpruned reference.
        retention: the swept value, when this variant is a sweep point.
        decode_attention: which layers decode through plphp's grouped kernel ("pruned", "all",
            "model"; see `plphp.apply`).
    """

    label: str
    policy: Any = None
    retention: float | None = None
    decode_attention: str = "pruned"


def build_input_ids(model: Any, adapter: Any, workload: Workload, seed: int = 0) -> torch.Tensor:
    """`[B, L]` ids: text, `images` blocks of the vision token id (one text token between), text."""
    vocab = model.config.get_text_config(decoder=True).vocab_size
    vision_id = adapter.vision_token_ids()[0]
    low = max(vocab // 2, max(adapter.vision_token_ids()) + 1)  # clear of the tokenizer's special ids
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, vocab, (workload.batch, workload.prompt_length), generator=generator)
    start = workload.text_tokens // 2
    per_image = [
        workload.vision_tokens // workload.images + (i < workload.vision_tokens % workload.images)
        for i in range(workload.images)
    ]
    position = start
    for count in per_image:
        ids[:, position : position + count] = vision_id
        position += count + 1
    return ids
