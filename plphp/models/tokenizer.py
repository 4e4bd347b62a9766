"""The tiny models' tokenizers: byte-level BPE trained in code on a built-in corpus, with chat templates."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from itertools import pairwise

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
)

from plphp.models.common import (
    _QWEN_FAMILY,
)

_CORPUS = """\
The image shows a red square on a blue background.
A small green circle is next to a large yellow rectangle.
What is shown in the picture? Describe the image in detail.
There are two cats and one dog sitting on the grass.
How many objects are in the image? Answer with a number.
The photo was taken outside on a sunny day near the river.
Compare the first image with the second image.
Which color is the largest shape? The largest shape is blue.
A person is reading a book at a wooden table in the kitchen.
The chart shows the number of visitors per month in the park.
Is there a car in the image? Yes, there is a white car.
The text on the sign says open from nine to five.
Left, right, top and bottom: where is the orange triangle?
The answer is yes. The answer is no. I do not know.
Describe the scene, the colors, the shapes and the people.
"""
_NUM_MERGES = 120

_LLAVA_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>")
_ONEVISION_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Chat templates: each accepts content given as a string or as a list of {"type": "image"} /
# {"type": "video"} / {"type": "text", "text": ...} items.
_VICUNA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'video' %}<video>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ ' ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ image_placeholder }}"
    "{% elif item['type'] == 'video' %}{{ video_placeholder }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chatml_template(image_placeholder: str, video_placeholder: str) -> str:
    return (
        "{% set image_placeholder = '" + image_placeholder + "' %}"
        "{% set video_placeholder = '" + video_placeholder + "' %}" + _CHATML_TEMPLATE
    )


_CHAT_TEMPLATES = {
    "llava": _VICUNA_TEMPLATE,
    "llava_next": _VICUNA_TEMPLATE,
    "llava_onevision": _chatml_template("<image>\\n", "<video>\\n"),
    "qwen2_vl": _chatml_template(
        "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
    ),
    "qwen2_5_vl": _chatml_template(
        "<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>"
    ),
}


def _special_tokens(arch: str) -> tuple[str, ...]:
    if arch in _QWEN_FAMILY:
        return _QWEN_SPECIALS
    if arch == "llava_onevision":
        return _ONEVISION_SPECIALS
    return _LLAVA_SPECIALS


def _train_bpe_merges(corpus: str, num_merges: int) -> list[tuple[str, str]]:
    """Learns byte-level BPE merges on `corpus`, deterministically (ties break lexicographically)."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = Counter(piece for line in corpus.splitlines() for piece, _ in pre.pre_tokenize_str(line + "\n"))
    splits = {word: list(word) for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            symbols = splits[word]
            for pair in pairwise(symbols):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        for word, symbols in splits.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            splits[word] = out
    return merges


@lru_cache(maxsize=1)
def _bpe_vocabulary() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    merges = _train_bpe_merges(_CORPUS, _NUM_MERGES)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    return tuple(tokens), tuple(merges)


def _build_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    specials = _special_tokens(arch)
    if arch in _QWEN_FAMILY or arch == "llava_onevision":
        names = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}
    else:
        names = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return bpe_tokenizer(specials, _CHAT_TEMPLATES[arch], names)


def bpe_tokenizer(
    specials: tuple[str, ...],
    chat_template: str,
    names: dict[str, str],
    named_tokens: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """The tiny byte-level BPE tokenizer with `specials` first in its vocabulary (ids 0, 1, ...).

    Args:
        specials: special tokens, in id order.
        chat_template: the Jinja chat template.
        names: the standard special tokens (`pad_token`, `eos_token`, ...).
        named_tokens: extra special tokens a processor reads as attributes (InternVL's
            `start_image_token`, ...); the other specials become unnamed extra special tokens.
    """
    base_tokens, merges = _bpe_vocabulary()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for tok in base_tokens:
        vocab[tok] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])
    extra: list[str] | dict[str, str] = [tok for tok in specials if tok not in names.values()]
    if named_tokens:
        extra = dict(named_tokens)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        padding_side="left",
        chat_template=chat_template,
        model_max_length=4096,
        extra_special_tokens=extra,
        **names,
    )
