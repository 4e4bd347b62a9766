"""The kvpress side of `plphp.bench.peer`: a long-lived worker run by the peer virtualenv's python.

    .peer/kvpress-venv/bin/python plphp/bench/kvpress_worker.py

It never imports plphp: the peer virtualenv holds kvpress's own transformers (older than plphp's
declared range) and none of plphp's other dependencies. The one piece of plphp it runs is
`plphp/bench/memory.py` (stdlib and torch only), loaded from its file, so both processes measure
peak memory the same way. It reads one JSON request per line on stdin and answers one JSON line on
stdout (`{"error": ...}` when a request fails):

- `build`: `Qwen2ForCausalLM` from a config dict, random weights from `seed`; answers a fingerprint
  of the weights (the driver checks that both processes hold the same model) and the versions.
- `prefill`: a cache of `input_ids` `[B, L]`, compressed by a kvpress press (`none`, `snapkv`,
  `adakv` = `AdaKVPress(SnapKVPress)`, `knorm`), as kvpress applies it: inside `with press(model):`
  its forward hook compresses each layer's cache at the end of that layer's prefill. `synthetic`
  fills each layer with random keys and values and calls the press's own hook with a random
  observation (the last `window` hidden states; prefill of a 0.5B model on 4 × 2000 tokens takes
  minutes on one CPU thread); `real` runs `model.model(input_ids, past_key_values=cache)` as
  kvpress's pipeline does.
  Answers a `run` id: several runs can be live at once, each with its own cache.
- `step`: one greedy decode step of a run with explicit positions (as kvpress's pipeline decodes:
  the compressed cache's length is not the position), timed around the forward call and the argmax.
- `finish`: a run's KV bytes after its last step and its decode peak (when its prefill measured
  memory: only a run alone measures its own); drops its cache.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def _peak_memory_class():
    spec = importlib.util.spec_from_file_location("plphp_bench_memory", Path(__file__).with_name("memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PeakMemory


def _kv_bytes(cache) -> tuple[int, int]:
    """(bytes in use, bytes of storage) of the cache's key and value tensors."""
    used = allocated = 0
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None or keys.numel() == 0:
            continue
        used += keys.numel() * keys.element_size() + values.numel() * values.element_size()
        allocated += keys.untyped_storage().nbytes() + values.untyped_storage().nbytes()
    return used, allocated


@dataclass
class Run:
    """One live cache: its masks (AdaKV), the next input token, the prompt length and the steps taken."""

    cache: Any
    masks: list
    token: torch.Tensor
    length: int
    steps: int = 0
    measured: bool = True


class Worker:
    def __init__(self):
        self.model = None
        self.runs: dict[int, Run] = {}
        self.memory = _peak_memory_class()("cpu")

    def build(self, config: dict, seed: int = 0, threads: int | None = None) -> dict:
        import kvpress  # noqa: F401  (its import patches transformers' attention functions for AdaKV)
        import transformers
        from transformers import Qwen2Config, Qwen2ForCausalLM

        if threads:
            torch.set_num_threads(int(threads))
        torch.manual_seed(seed)
        self.model = Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="sdpa")).to(torch.float32).eval()
        with torch.no_grad():
            fingerprint = float(sum(p.double().abs().sum() for p in self.model.parameters()))
        return {
            "fingerprint": fingerprint,
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "kvpress": _version("kvpress"),
                "python": sys.version.split()[0],
            },
            "torch_num_threads": torch.get_num_threads(),
        }

    def _press(self, spec: dict):
        from kvpress import AdaKVPress, KnormPress, SnapKVPress

        name, ratio = spec["name"], float(spec.get("compression_ratio", 0.0))
        snap = {"window_size": int(spec.get("window_size", 64)), "kernel_size": int(spec.get("kernel_size", 5))}
        if name == "none":
            return None
        if name == "snapkv":
            return SnapKVPress(compression_ratio=ratio, **snap)
        if name == "adakv":
            return AdaKVPress(SnapKVPress(compression_ratio=ratio, **snap), alpha_safeguard=spec.get("safeguard", 0.2))
        if name == "knorm":
            return KnormPress(compression_ratio=ratio)
        raise ValueError(f"press: {name!r} is not known; use none, snapkv, adakv or knorm")

    def _synthetic_prefill(self, press, input_ids: torch.Tensor, seed: int, window: int):
        from transformers import DynamicCache

        config, language_model = self.model.config, self.model.model
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        batch, length = input_ids.shape
        generator = torch.Generator().manual_seed(seed)
        cache = DynamicCache(config=config)
        position_ids = torch.arange(length)[None].expand(batch, length)
        hidden = torch.zeros(batch, length, config.hidden_size)  # only the observation window is read
        window = min(window, length)
        with press(self.model) if press is not None else contextlib.nullcontext():
            for idx, layer in enumerate(language_model.layers):
                shape = (batch, kv_heads, length, head_dim)
                keys, values = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
                cache.update(keys, values, idx)
                if press is None:
                    continue
                hidden[:, -window:] = torch.randn(batch, window, config.hidden_size, generator=generator)
                kwargs = {
                    "hidden_states": hidden,
                    "past_key_values": cache,
                    "cache_position": torch.arange(length),
                    "position_embeddings": language_model.rotary_emb(hidden, position_ids),
                }
                press.forward_hook(layer.self_attn, (), kwargs, (None, None))
        return cache

    def prefill(
        self, press: dict, input_ids: list, mode: str = "synthetic", seed: int = 0, measure_memory: bool = True
    ) -> dict:
        ids = torch.tensor(input_ids, dtype=torch.long)
        layers = self.model.model.layers
        for layer in layers:  # kvpress's real prefill clears them in its attention patch
            layer.self_attn.masked_key_indices = None
        memory_before = self.memory.reset() if measure_memory else None
        kvpress_press = self._press(press)
        with torch.inference_mode():
            if mode == "real":
                from transformers import DynamicCache

                cache = DynamicCache(config=self.model.config)
                with kvpress_press(self.model) if kvpress_press is not None else contextlib.nullcontext():
                    self.model.model(input_ids=ids, past_key_values=cache, use_cache=True)
            else:
                cache = self._synthetic_prefill(kvpress_press, ids, seed, int(press.get("window_size", 64)))
        peak_prefill = self.memory.peak() if measure_memory else None
        masks = [getattr(layer.self_attn, "masked_key_indices", None) for layer in layers]
        run = len(self.runs)
        self.runs[run] = Run(cache=cache, masks=masks, token=ids[:, -1:].clone(), length=ids.shape[1])
        used, allocated = _kv_bytes(cache)
        if measure_memory:
            self.memory.reset()
        state = self.runs[run]
        state.measured = measure_memory
        return {
            "run": run,
            "kv_bytes": used,
            "kv_bytes_allocated": allocated,
            "kv_lengths": sorted({int(layer.keys.shape[-2]) for layer in cache.layers}),
            # (sequence, KV head, position) triples AdaKV masks at decode time but still holds
            "masked_entries": sum(len(indices[0]) for indices in masks if indices is not None),
            "memory_before": memory_before,
            "peak_prefill": peak_prefill,
        }

    def step(self, run: int) -> dict:
        state = self.runs[run]
        # kvpress keeps AdaKV's masks on the attention modules: hand each live run its own
        for layer, indices in zip(self.model.model.layers, state.masks):
            layer.self_attn.masked_key_indices = indices
        positions = torch.full((state.token.shape[0], 1), state.length + state.steps, dtype=torch.long)
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model(
                input_ids=state.token, past_key_values=state.cache, position_ids=positions, logits_to_keep=1
            )
            state.token = out.logits[:, -1].argmax(-1, keepdim=True)
            step_s = time.perf_counter() - start
        state.steps += 1
        return {"step_s": step_s}

    def finish(self, run: int) -> dict:
        state = self.runs.pop(run)
        used, allocated = _kv_bytes(state.cache)
        peak = self.memory.peak() if state.measured else None
        return {"kv_bytes_end": used, "kv_bytes_allocated_end": allocated, "peak_decode": peak}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main() -> int:
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op", None)
        if op == "quit":
            sys.stdout.flush()
            os._exit(0)  # nothing to save: skip the interpreter's teardown of torch
        try:
            if op not in ("build", "prefill", "step", "finish"):
                raise ValueError(f"op: {op!r} is not known; use build, prefill, step, finish or quit")
            answer = getattr(worker, op)(**request)
        except Exception as error:  # the driver raises it as a one-line error, the trace goes to stderr
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
