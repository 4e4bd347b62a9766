"""`plphp eval`: several policies side by side on one dataset — accuracy, KV bytes, decode time and
attention recall — as JSON, a table and a plot. See docs/evaluation.md.

Submodules load on first use, so that the command line starts without importing torch.
"""

from __future__ import annotations

from plphp.lazy import lazy_exports

_EXPORTS = {
    "DatasetError": "dataset",
    "EvalItem": "dataset",
    "builtin_items": "dataset",
    "load_jsonl": "dataset",
    "EvalSettings": "runner",
    "run_eval": "runner",
    "default_policies": "run",
    "evaluate": "run",
    "plot_summary": "plot",
    "summarize": "summary",
    "summary_table": "summary",
    "bootstrap_ci": "stats",
    "mcnemar_exact": "stats",
    "paired_bootstrap_ci": "stats",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
