"""`plphp bench`: decode speed, KV memory and prefill cost of pruning policies, side by side.

The pieces, each usable on its own:

- `workload`: what a run processes (`Workload`), what is measured (`Variant`), and the prompt ids.
- `runs`: the interleaved measurement loop (synthetic or real prefill, then timed decoding).
- `summary`: the results of the runs and one summary row per variant (medians, ratios, bandwidth model).
- `environment`: threads, load and versions, recorded with every figure.
- `timing`: session observers timing the compression step, the prefill setup and the collector
  from the session's events.
- `synthetic`: synthetic vision for text-only models (`SyntheticVision`, an adapter plugin for a
  `with` block), and the Qwen2-0.5B-shaped text model and prompt of the prefill benchmarks.
- `prefill`: whole-prefill timings, interleaved, and their ratios (`benchmarks/prefill_*.py`).
- `shapes`: named model shapes with random weights (LLaVA-OneVision-Qwen2-0.5B / 7B, Qwen2-VL-2B / 7B).
- `sweep`: `--sweep FIELD=START:STOP:STEP` parsing into policy variants.
- `bandwidth`: the memory-bandwidth model (measured bandwidth, ideal pruned step, bytes-per-step floor).
- `memory`: per-measurement peak memory (CUDA max allocated, or peak RSS with a reset on Linux).
- `output`: rich table, JSON, Markdown and PNG.
"""
