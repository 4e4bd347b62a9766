"""`plphp inspect`: figures of what a policy does inside a model, layer by layer and head by head.

For one input, a JSONL dataset or the built-in tasks, and one or more policies, it draws the
vision-attention curve (γ per layer with the policy's tiers), retention and kept counts, the
patches each KV head keeps on the real image, attention recall per layer and head, and the
overlap of the heads' keep-sets; writes every figure's data to `inspect.json` and one
self-contained `index.html`. A face: it may import the backend, models and evaluation; nothing
below imports it.
"""

from __future__ import annotations

from plphp.inspect.run import InspectSettings, run_inspect

__all__ = ["InspectSettings", "run_inspect"]
