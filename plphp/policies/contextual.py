"""Contextual merger (VisionZip's contextual tokens, Yang et al. 2024, "VisionZip: Longer is Better
but Not Necessary in Vision Language Models", arXiv 2412.04467).

Of each image's budget `k`, the `k − m` best-scored kept tokens stay as they are (VisionZip's
dominant tokens) and `m = round(share · k)` contextual tokens summarise everything else: `m` targets
evenly spaced (in prompt order) among the remaining tokens, each other remaining token folded into
the target its projected feature is most cosine-similar to, and every target the mean of its group.
VisionZip compares the tower's last-layer keys and merges before the projector; we compare and
merge the projected features, our choice (the input stage acts on them). `share = 0` merges nothing:
plain selection.
"""

from __future__ import annotations

import torch
from pydantic import Field

from plphp.components import Merger, Params


class Contextual(Merger):
    """Dominant kept tokens plus contextual tokens that average the rest by feature similarity."""

    name = "contextual"

    class Params(Params):
        share: float = Field(10 / 64, ge=0.0, le=1.0, description="share of each image's budget made contextual")

    def merge(self, keep, stats, vision, prompt) -> torch.Tensor:
        features = stats.features if stats.features is not None else vision.features
        scores = stats.scores.float().mean(1)  # [B, L]
        assignment = torch.full_like(prompt.segment_ids, -1)
        for b in range(prompt.batch_size):
            kept = keep[b][keep[b] >= 0]
            for segment in prompt.segments(b):
                in_image = kept[torch.isin(kept, segment)]
                contextual = min(round(self.params.share * len(in_image)), len(in_image))
                dominant_count = len(in_image) - contextual
                dominant = in_image[scores[b, in_image].argsort(descending=True, stable=True)[:dominant_count]]
                assignment[b, dominant] = dominant
                remaining = segment[~torch.isin(segment, dominant)]
                if contextual == 0 or len(remaining) == 0:
                    continue  # nothing is merged: the dropped tokens are discarded
                spots = torch.arange(contextual, device=segment.device) * len(remaining) // contextual
                targets = remaining[spots]
                unit = torch.nn.functional.normalize(features[b, remaining.to(features.device)].float(), dim=-1)
                nearest = (
                    (unit @ unit[spots.to(unit.device)].T).argmax(-1).to(segment.device)
                )  # [R] most similar target
                assignment[b, remaining] = targets[nearest]
                assignment[b, targets] = targets  # a target is its own group's output token
        return assignment
