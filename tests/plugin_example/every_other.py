"""A third-party selector, as another package would ship it: keeps every other vision token."""

import torch

import plphp
from plphp.ops import kept_count, pad_keep_indices


class EveryOther(plphp.Selector):
    """Keeps evenly spaced vision tokens of each image (the same for every head)."""

    name = "every_other"

    def select(self, stats, retention, prompt, layer_idx):
        rows = []
        for b in range(prompt.batch_size):
            picked = []
            for segment in prompt.segments(b):
                k = kept_count(float(retention[b]), len(segment))
                picked.append(segment[torch.linspace(0, len(segment) - 1, k).round().long().unique()][:k])
            kept = torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)
            rows.append([kept] * prompt.num_kv_heads)
        return pad_keep_indices(rows, prompt.vision_mask.device)


@plphp.hookimpl
def plphp_selectors():
    return [EveryOther]


@plphp.hookimpl
def plphp_presets():
    return [
        plphp.Preset(
            name="every-other",
            config={"allocator": {"name": "uniform", "retention": 0.5}, "selector": {"name": "every_other"}},
        )
    ]
