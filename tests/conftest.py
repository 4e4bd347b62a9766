"""Shared test settings: deterministic, single-threaded torch (2 shared cores; see docs/architecture.md, "Measuring")."""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

settings.register_profile(
    "plphp", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("plphp")
