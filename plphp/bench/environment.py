"""The machine a figure was measured on: threads, load and versions, recorded with every figure."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def environment() -> dict[str, Any]:
    """Threads, load and versions: recorded with every figure (docs/architecture.md, "Measuring")."""
    import transformers

    import plphp
    from plphp.backends import native

    env_keys = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "plphp": plphp.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "env": {key: os.environ.get(key) for key in env_keys},
        "load_avg": list(os.getloadavg()),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "native_decode_kernel": native.status(),
    }


def describe_kernel(env: dict[str, Any]) -> str:
    """One line for a figure's notes: which one-query kernel decodes float32 on the CPU."""
    status = env.get("native_decode_kernel") or {}
    if status.get("available"):
        return f"native decode kernel ({status['isa']}) for float32 CPU attention"
    return f"no native decode kernel ({status.get('reason', 'unknown')}): torch's products"
