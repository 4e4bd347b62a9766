"""plphp's native CPU decode kernel (plphp.backends.native): the same attention as the reference, in
both of its builds, at the shapes of real models (tile edges, strided cache views, masks, threads),
and what happens where it cannot run (other dtypes and shapes, no compiler, switched off)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import plphp
from plphp.backends import native
from plphp.backends.decode_attention import invalid_span, torch_grouped_decode_attention
from plphp.testing import tiny_vlm

from .test_decode_attention import naive_attention

_native = native.decode_attention

pytestmark = pytest.mark.skipif(native.kernel() is None, reason=f"no native kernel: {native.status().get('reason')}")


@pytest.fixture(scope="module")
def builds():
    """The default build (hand-vectorised where the machine has AVX-512) and the portable one."""
    return {"default": native.kernel(), "portable": native.load(native.PORTABLE)}


@st.composite
def cases(draw):
    return dict(
        batch=draw(st.integers(1, 3)),
        kv_heads=draw(st.sampled_from([1, 2, 3])),
        group=draw(st.sampled_from([1, 2, 3, 5, 7, 8, 9, 16, 32])),
        length=draw(st.sampled_from([1, 2, 15, 16, 17, 127, 128, 129, 300])),
        head_dim=draw(st.sampled_from([16, 32, 64, 80, 96, 128, 256])),
        mask=draw(st.sampled_from(["none", "front", "holes", "all-but-last"])),
        per_head=draw(st.booleans()),
        threads=draw(st.sampled_from([1, 2, 5])),
        build=draw(st.sampled_from(["default", "portable"])),
        seed=draw(st.integers(0, 2**16)),
    )


def _valid(mask, batch, rows, length, generator):
    if mask == "none":
        return None
    if mask == "front":
        pad = torch.randint(0, length, (batch, rows), generator=generator)
        valid = torch.arange(length)[None, None, :] >= pad[..., None]
    elif mask == "holes":
        valid = torch.rand(batch, rows, length, generator=generator) < 0.6
    else:
        valid = torch.zeros(batch, rows, length, dtype=torch.bool)
    valid[..., -1] = True
    return valid


@settings(max_examples=120, deadline=None)
@given(cases())
def test_the_native_kernel_equals_repeat_kv_and_masked_softmax(builds, case):
    generator = torch.Generator().manual_seed(case["seed"])
    batch, kv_heads, length, dim = case["batch"], case["kv_heads"], case["length"], case["head_dim"]
    heads = kv_heads * case["group"]
    query = torch.randn(batch, heads, 1, dim, generator=generator) * 2
    # the cache's layout: the first `length` slots of buffers with spare slots
    keys = torch.randn(batch, kv_heads, length + 7, dim, generator=generator)[:, :, :length]
    values = torch.randn(batch, kv_heads, length + 7, dim, generator=generator)[:, :, :length]
    valid = _valid(case["mask"], batch, kv_heads if case["per_head"] else 1, length, generator)
    scaling = dim**-0.5
    expected = naive_attention(query, keys, values, scaling, valid)
    previous = torch.get_num_threads()
    torch.set_num_threads(case["threads"])
    try:
        for span in (None, invalid_span(valid)):
            output = native.decode_attention(query, keys, values, scaling, valid, span, builds[case["build"]])
            assert output is not None and output.shape == (batch, 1, heads, dim)
            assert (output.double() - expected).abs().max() <= 1e-5
    finally:
        torch.set_num_threads(previous)


def test_what_the_native_kernel_does_not_serve_goes_to_torch():
    query, key = torch.randn(1, 4, 1, 64), torch.randn(1, 2, 10, 64)
    assert native.decode_attention(query, key, key, 0.1, None, None) is not None
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        assert native.decode_attention(query.to(dtype), key.to(dtype), key.to(dtype), 0.1, None, None) is None
    wide = torch.randn(1, 66, 1, 64)  # a group of 33 query heads per KV head
    assert native.decode_attention(wide, key, key, 0.1, None, None) is None
    assert (
        native.decode_attention(torch.randn(1, 4, 1, 320), *[torch.randn(1, 2, 10, 320)] * 2, 0.1, None, None) is None
    )
    strided = torch.randn(1, 2, 10, 128)[..., ::2]  # rows not contiguous in D
    assert native.decode_attention(query, strided, strided, 0.1, None, None) is None
    with torch.enable_grad():
        trained = query.clone().requires_grad_()
        assert native.decode_attention(trained, key, key, 0.1, None, None) is None


def test_loading_the_kernel_leaves_denormals_alone():
    """Built without -ffast-math, whose startup code would set flush-to-zero for the whole process."""
    assert native.kernel() is not None
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny / 10).item() != 0.0


def test_the_build_is_cached_per_source_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("PLPHP_KERNEL_CACHE", str(tmp_path))
    first = native.build(native.PORTABLE)
    stamp = first.stat().st_mtime_ns
    assert native.build(native.PORTABLE) == first and first.stat().st_mtime_ns == stamp
    assert first.name != os.path.basename(native.status()["path"])  # other flags, another library
    assert [path.name for path in tmp_path.iterdir()] == [first.name]  # no partial files left


def test_no_compiler_or_switched_off_means_torch_and_a_reason(tmp_path):
    script = (
        "import torch, plphp\n"
        "from plphp.backends import native\n"
        "from plphp.backends.decode_attention import grouped_decode_attention\n"
        "q, k = torch.randn(1, 4, 1, 64), torch.randn(1, 2, 9, 64)\n"
        "assert grouped_decode_attention(q, k, k, 0.1).shape == (1, 1, 4, 64)\n"
        "print(native.status())\n"
    )
    for env, reason in (
        ({"CC": "no-such-cc"}, "no C compiler ('no-such-cc'"),
        ({"PLPHP_NATIVE_KERNEL": "0"}, "disabled"),
    ):
        environment = os.environ | env | {"PLPHP_KERNEL_CACHE": str(tmp_path)}
        result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "'available': False" in result.stdout and reason in result.stdout


def test_generate_gives_the_same_tokens_with_and_without_the_native_kernel(monkeypatch):
    vlm = tiny_vlm("llava_onevision")
    model, inputs = vlm.model, vlm.inputs["batch3"]  # left padding, several images

    def run():
        with torch.inference_mode(), plphp.apply(model, "plphp", decode_attention="all"):
            return model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)

    calls = []
    monkeypatch.setattr(native, "decode_attention", lambda *args: calls.append(1) or _native(*args))
    with_native = run()
    assert calls, "the float32 CPU model decodes through the native kernel"
    monkeypatch.setattr(native, "decode_attention", lambda *args: None)
    assert torch.equal(run(), with_native)


def test_the_torch_path_is_what_runs_where_the_kernel_is_off(monkeypatch):
    query, key = torch.randn(2, 6, 1, 64), torch.randn(2, 3, 20, 64)
    monkeypatch.setattr(native, "kernel", lambda: None)
    expected = torch_grouped_decode_attention(query, key, key, 0.125)
    assert native.decode_attention(query, key, key, 0.125, None, None) is None
    assert torch.equal(plphp.backends.decode_attention.grouped_decode_attention(query, key, key, 0.125), expected)


def test_the_kernel_threads_are_torchs_own_openmp_pool():
    """Linked against the OpenMP runtime torch loaded: one runtime in the process, not two whose idle
    threads spin against each other's work."""
    runtime = native.openmp_runtime()
    if runtime is None:
        pytest.skip("torch loaded no OpenMP runtime here: the kernel runs on one thread")
    assert native.status()["threaded"]
    maps = Path("/proc/self/maps").read_text().splitlines()
    loaded = {line.split()[-1] for line in maps if re.search(r"/lib(gomp|iomp5)[^/]*\.so", line)}
    assert loaded == {runtime}
