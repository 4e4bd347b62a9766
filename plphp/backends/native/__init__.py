"""plphp's native CPU decode kernel: built from `decode_attention.c` on first use, loaded with ctypes.

On the CPU, one-query attention with grouped heads is bound by arithmetic, not by memory: each
cached key and value element feeds `2 G` flops (`G` query heads per KV head), and the BLAS products
of torch's path run its `[G, D] x [D, L]` shapes at a fraction of the processor's peak. The C kernel
reads each key and value row once, reuses it from L1 for the group's rows, and keeps the softmax
online (docs/architecture.md, "The decode path of pruned layers").

It is compiled with the system's C compiler (`$CC`, else `cc`) for the machine it runs on
(`-march=native`), once per source, flags and processor, into `$PLPHP_KERNEL_CACHE` (default
`~/.cache/plphp/kernels`). It is linked against the OpenMP runtime torch has loaded, so its threads
(`torch.get_num_threads()`) are torch's own pool; where none is found it runs on one thread. Where
there is no compiler, or the build fails, or `PLPHP_NATIVE_KERNEL=0`, `kernel()` is None and plphp
decodes through torch (`status()` says why).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("decode_attention.c")
#: No -ffast-math: in a shared library it would set flush-to-zero for the whole process.
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros")
#: The portable build, for tests on a machine with AVX-512: the loops the compiler vectorises itself.
PORTABLE = ("-mno-avx512f",)
MAX_GROUP, MAX_DIM = 32, 256

_status: dict[str, Any] = {}


def _processor() -> str:
    """What `-march=native` depends on: the processor's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def openmp_runtime() -> str | None:
    """The OpenMP runtime torch loaded into this process (libgomp, or Intel's libiomp5, which serves
    the same calls), or None: the kernel is linked against it so that one pool of threads serves both
    (two runtimes' idle threads would spin against each other's work)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = sorted({line.split()[-1] for line in maps.splitlines() if re.search(r"/lib(gomp|iomp5)[^/]*\.so", line)})
    return found[0] if found else None


def _cache_dir() -> Path:
    configured = os.environ.get("PLPHP_KERNEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "plphp" / "kernels"


def build(extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the kernel (or find it built) and return the shared library's path.

    Raises:
        RuntimeError: no C compiler, or the build failed (the message ends with the compiler's).
    """
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler ({compiler!r} is not on PATH; set CC)")
    flags = (*FLAGS, *extra_flags)
    openmp = openmp_runtime()
    identity = [SOURCE.read_text(), compiler, *flags, openmp or "no OpenMP", _processor()]
    key = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:16]
    directory = _cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        directory = Path(tempfile.gettempdir()) / f"plphp-kernels-{os.getuid()}"
        directory.mkdir(parents=True, exist_ok=True)
    library = directory / f"decode_attention-{key}.so"
    if library.exists():
        return library
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        objects, partial = Path(scratch) / "decode_attention.o", Path(scratch) / "decode_attention.so"
        compile_step = [compiler, *flags, *(["-fopenmp"] if openmp else []), "-fPIC", "-c", str(SOURCE)]
        link_step = [compiler, "-shared", str(objects), "-o", str(partial), "-lm"]
        if openmp:  # the runtime torch loaded, by its path: not a second copy from the system
            link_step[3:3] = [openmp, f"-Wl,-rpath,{Path(openmp).parent}"]
        for command in ([*compile_step, "-o", str(objects)], link_step):
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                message = (result.stderr or result.stdout).strip().splitlines()
                raise RuntimeError(f"{' '.join(command)} failed: {message[-1] if message else result.returncode}")
        os.replace(partial, library)  # atomic: processes building at once each leave a whole library
    return library


def load(extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The built library with its functions' signatures declared."""
    library = ctypes.CDLL(str(build(extra_flags)))
    long, pointer = ctypes.c_long, ctypes.c_void_p
    library.plphp_decode_f32.restype = ctypes.c_int
    library.plphp_decode_f32.argtypes = [
        pointer, pointer, long, long, long, pointer, long, long, long, pointer, long, long, pointer,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, long, ctypes.c_float, long, long, ctypes.c_int,
    ]  # fmt: skip
    library.plphp_isa.restype = ctypes.c_int
    return library


@functools.cache
def kernel() -> ctypes.CDLL | None:
    """The native kernel of this process, or None (then `status()["reason"]` says why)."""
    if os.environ.get("PLPHP_NATIVE_KERNEL", "1") == "0":
        _status.update(available=False, reason="disabled by PLPHP_NATIVE_KERNEL=0")
        return None
    try:
        library = load()
    except (RuntimeError, OSError) as error:
        _status.update(available=False, reason=str(error))
        return None
    flags = library.plphp_isa()
    _status.update(
        available=True, path=library._name, isa="avx512" if flags & 1 else "portable", threaded=bool(flags & 2)
    )
    return library


def status() -> dict[str, Any]:
    """`available`, and `isa`, `threaded` and `path`, or the `reason` it is not: recorded with bench
    figures."""
    kernel()
    return dict(_status)


def decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float,
    valid: torch.Tensor | None,
    valid_span: tuple[int, int] | None,
    library: ctypes.CDLL | None = None,
) -> torch.Tensor | None:
    """`grouped_decode_attention` through the native kernel, or None where it does not apply: not
    float32 CPU tensors, autograd on, rows not contiguous in `D`, a group over 32 or `D` over 256, or
    no kernel. Arguments as `plphp.backends.decode_attention.grouped_decode_attention`."""
    library = library or kernel()
    if library is None or query.device.type != "cpu" or key.device.type != "cpu" or value.device.type != "cpu":
        return None
    if not (query.dtype == key.dtype == value.dtype == torch.float32):
        return None
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return None
    batch, heads, _, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    if group > MAX_GROUP or head_dim > MAX_DIM or length < 1 or key.stride(-1) != 1 or value.stride(-1) != 1:
        return None
    query = query.contiguous()  # [B, H, 1, D] is [B, H_kv, G, D]
    out = torch.empty(batch, 1, heads, head_dim)
    mask_strides = (0, 0)
    lo, hi = valid_span if valid_span is not None else (0, length)
    if valid is not None:
        valid = valid if valid.stride(-1) == 1 else valid.contiguous()
        mask_strides = (valid.stride(0), valid.stride(1) if valid.shape[1] > 1 else 0)
    failed = library.plphp_decode_f32(
        query.data_ptr(), key.data_ptr(), key.stride(0), key.stride(1), key.stride(2),
        value.data_ptr(), value.stride(0), value.stride(1), value.stride(2),
        valid.data_ptr() if valid is not None else None, *mask_strides, out.data_ptr(),
        batch, kv_heads, group, head_dim, length, scaling, lo, hi, torch.get_num_threads(),
    )  # fmt: skip
    return None if failed else out
