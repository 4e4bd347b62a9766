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
- `step`: one greedy decode step with explicit positions (as kvpress's pipeline decodes: the
  compressed cache's length is not the position), timed around the forward call and the argmax.
- `finish`: KV bytes after the last step and the decode peak; drops the cache.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

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


class Worker:
    def __init__(self):
        self.model = None
        self.cache = None
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

    def prefill(self, press: dict, input_ids: list, mode: str = "synthetic", seed: int = 0) -> dict:
        ids = torch.tensor(input_ids, dtype=torch.long)
        for layer in self.model.model.layers:  # what an earlier AdaKV run left on the modules
            layer.self_attn.masked_key_indices = None
        self.cache = None
        memory_before = self.memory.reset()
        kvpress_press = self._press(press)
        with torch.inference_mode():
            if mode == "real":
                from transformers import DynamicCache

                self.cache = DynamicCache(config=self.model.config)
                with kvpress_press(self.model) if kvpress_press is not None else contextlib.nullcontext():
                    self.model.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
            else:
                self.cache = self._synthetic_prefill(kvpress_press, ids, seed, int(press.get("window_size", 64)))
        peak_prefill = self.memory.peak()
        self.length, self.steps = ids.shape[1], 0
        self.token = ids[:, -1:].clone()
        used, allocated = _kv_bytes(self.cache)
        masked = sum(
            len(indices[0])
            for layer in self.model.model.layers
            if (indices := getattr(layer.self_attn, "masked_key_indices", None)) is not None
        )
        self.memory.reset()
        return {
            "kv_bytes": used,
            "kv_bytes_allocated": allocated,
            "kv_lengths": sorted({int(layer.keys.shape[-2]) for layer in self.cache.layers}),
            "masked_entries": masked,  # (batch, kv head, position) triples AdaKV masks but still holds
            "memory_before": memory_before,
            "peak_prefill": peak_prefill,
        }

    def step(self) -> dict:
        batch = self.token.shape[0]
        positions = torch.full((batch, 1), self.length + self.steps, dtype=torch.long)
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model(input_ids=self.token, past_key_values=self.cache, position_ids=positions, logits_to_keep=1)
            self.token = out.logits[:, -1].argmax(-1, keepdim=True)
            step_s = time.perf_counter() - start
        self.steps += 1
        return {"step_s": step_s}

    def finish(self) -> dict:
        used, allocated = _kv_bytes(self.cache)
        self.cache = None
        return {"kv_bytes_end": used, "kv_bytes_allocated_end": allocated, "peak_decode": self.memory.peak()}


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
            break
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
