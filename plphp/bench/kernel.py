"""The decode attention kernels alone: K/V read bandwidth of one-query attention at a model's shape.

`plphp bench` times each attention call inside real decode steps, where a shared machine's load
and the rest of the step blur the figure. This measures the kernels by themselves: one cache per
decoder layer (so the caches, as in a decode step, do not stay in the processor's caches between
calls), every layer's attention called in turn, the kernels interleaved round by round (A B C,
C B A, ...), and the K/V bytes read per second set against the measured read bandwidth.

Kernels: plphp's native one-query kernel (`plphp.backends.native`, float32 on the CPU, where it
builds), plphp's grouped kernel through torch's products (what runs elsewhere), and torch's sdpa
with `enable_gqa` (what transformers' sdpa path calls for a decode step without a mask). A sum over
the same keys and values runs in the same rounds: the read floor measured side by side, which a
loaded machine slows as it slows the kernels (the separate bandwidth kernel, run once, does not see
the same load).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from plphp.backends import native
from plphp.backends.decode_attention import torch_grouped_decode_attention
from plphp.bench.bandwidth import measure_bandwidth
from plphp.bench.shapes import ModelShape
from plphp.bench.timing import synchronize

#: The read floor, interleaved with the kernels: a sum over the same keys and values.
READ = "read K and V (sum)"


#: The native kernel's name in the results.
NATIVE = "native (plphp)"


def _kernels(
    scaling: float, native_applies: bool
) -> dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]]:
    def sdpa(query, key, value):
        return torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling, enable_gqa=True)

    kernels = {}
    if native_applies:
        kernels[NATIVE] = lambda query, key, value: native.decode_attention(query, key, value, scaling, None, None)
    kernels["grouped, torch products (plphp)"] = lambda query, key, value: torch_grouped_decode_attention(
        query, key, value, scaling
    )
    kernels["sdpa (enable_gqa)"] = sdpa
    kernels[READ] = lambda query, key, value: (key.sum(), value.sum())
    return kernels


def measure_kernels(
    shape: ModelShape,
    batch: int,
    context: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    rounds: int = 5,
    layers: int | None = None,
    bandwidth_mb: int = 256,
    between_layers: bool = False,
) -> dict[str, Any]:
    """Seconds per attention call and K/V read bandwidth of each kernel, on `layers` caches (default:
    the shape's layer count) of `context` slots each, views of buffers with 128 spare slots as
    plphp's cache holds them.

    Returns:
        `bandwidth` (the measured read figure, GB/s), and per kernel the median seconds per call
        (min, max over rounds), GB/s, the share of the read bandwidth and `of_read_floor`, the
        interleaved sum's seconds over the kernel's.

    With `between_layers`, each call is preceded (untimed) by the layer's MLP products for the batch's
    one token (`[B, hidden]` against the gate, up and down weights of the shape), as in a decode
    step, where they stream the weights through the caches between attention calls.
    """
    layers = layers or shape.layers
    generator = torch.Generator(device=device).manual_seed(0)

    def buffer() -> torch.Tensor:
        full = torch.randn(batch, shape.kv_heads, context + 128, shape.head_dim, generator=generator, device=device)
        return full.to(dtype)[:, :, :context]

    caches = [(buffer(), buffer()) for _ in range(layers)]
    hidden, intermediate = shape.hidden, shape.intermediate
    mlp: list[torch.Tensor] = []  # gate, up, down
    if between_layers:
        shapes = ((hidden, intermediate), (hidden, intermediate), (intermediate, hidden))
        mlp = [torch.randn(*dims, device=device).to(dtype) for dims in shapes]
    token = torch.randn(batch, hidden, device=device).to(dtype)
    query = torch.randn(batch, shape.heads, 1, shape.head_dim, generator=generator, device=device).to(dtype)
    scaling = shape.head_dim**-0.5
    native_applies = native.decode_attention(query, *caches[0], scaling, None, None) is not None
    kernels = _kernels(scaling, native_applies)
    seconds: dict[str, list[float]] = {name: [] for name in kernels}
    names = list(kernels)
    for index in range(rounds + 1):
        for name in names if index % 2 == 0 else names[::-1]:
            spent = 0.0
            for key, value in caches:
                if mlp:
                    torch.relu(token @ mlp[0]) * (token @ mlp[1]) @ mlp[2]
                synchronize(torch.device(device))
                start = time.perf_counter()
                kernels[name](query, key, value)
                synchronize(torch.device(device))
                spent += time.perf_counter() - start
            if index:  # the first round warms up
                seconds[name].append(spent / layers)
    bandwidth = measure_bandwidth(device, megabytes=bandwidth_mb)
    read = 2 * caches[0][0].numel() * caches[0][0].element_size()
    out: dict[str, Any] = {
        "batch": batch,
        "context": context,
        "layers": layers,
        "mlp_between_layers": between_layers,
        "dtype": str(dtype).removeprefix("torch."),
        "kv_bytes_per_call": read,
        "bandwidth": bandwidth.to_dict(),
        "native_kernel": native.status() if native_applies else {"available": False, "reason": "not float32 on CPU"},
        "kernels": {},
    }
    floor = statistics.median(seconds[READ])
    for name, values in seconds.items():
        median = statistics.median(values)
        out["kernels"][name] = {
            "seconds_per_call": {"median": median, "min": min(values), "max": max(values)},
            "read_GBps": read / median / 1e9,
            "bandwidth_share": read / median / bandwidth.read,
            "of_read_floor": floor / median,
        }
    return out


def matmul_rates(
    shape: ModelShape, batch: int, context: int, rows: tuple[int, ...] = (1, 7, 16, 64)
) -> dict[int, float]:
    """GFLOP/s of the score product `[rows, D] x [D, L]` per (sample, KV head) at `rows` query rows:
    with one query token the group size is the row count, which bounds the kernel's speed."""
    key = torch.randn(batch, shape.kv_heads, context, shape.head_dim)
    rates = {}
    for count in rows:
        query = torch.randn(batch, shape.kv_heads, count, shape.head_dim)
        query @ key.transpose(-1, -2)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            query @ key.transpose(-1, -2)
            times.append(time.perf_counter() - start)
        flops = 2 * count * context * shape.head_dim * batch * shape.kv_heads
        rates[count] = flops / statistics.median(times) / 1e9
    return rates
