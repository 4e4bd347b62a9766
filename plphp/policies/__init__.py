"""Built-in policy components and presets, registered through plphp's own hooks.

This module is a plugin like any third-party one: `pyproject.toml` names it in the entry-point
group `plphp`. One component per file; add a file and list its class below.
"""

from __future__ import annotations

from plphp.hookspecs import hookimpl
from plphp.policies.head_topk import HeadTopK
from plphp.policies.last_token import LastTokenAttention
from plphp.policies.presets import PRESETS
from plphp.policies.random_select import RandomSelector
from plphp.policies.uniform import Uniform
from plphp.policies.vision_tiers import VisionTiers


@hookimpl
def plphp_collectors():
    return [LastTokenAttention]


@hookimpl
def plphp_allocators():
    return [VisionTiers, Uniform]


@hookimpl
def plphp_selectors():
    return [HeadTopK, RandomSelector]


@hookimpl
def plphp_presets():
    return PRESETS
