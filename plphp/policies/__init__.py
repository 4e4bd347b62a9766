"""Built-in policy components and presets, registered through plphp's own hooks.

This module is a plugin like any third-party one: `pyproject.toml` names it in the entry-point
group `plphp`. One component per file; add a file and list its class below.
"""

from __future__ import annotations

from plphp.hookspecs import hookimpl
from plphp.policies.adaptive_topk import AdaptiveTopK
from plphp.policies.cls_attention import ClsAttention
from plphp.policies.contextual import Contextual
from plphp.policies.diversity import Diversity
from plphp.policies.duplication import Duplication
from plphp.policies.features import Features
from plphp.policies.head_topk import HeadTopK
from plphp.policies.key_norm import KeyNorm
from plphp.policies.last_token import LastTokenAttention
from plphp.policies.pool import Pool
from plphp.policies.presets import PRESETS
from plphp.policies.pyramid import Pyramid
from plphp.policies.pyramid_stages import PyramidStages
from plphp.policies.random_select import RandomSelector
from plphp.policies.random_shared import RandomShared
from plphp.policies.shared_topk import SharedTopK
from plphp.policies.snapkv import SnapKV
from plphp.policies.uniform import Uniform
from plphp.policies.vision_tiers import VisionTiers
from plphp.policies.withdraw import Withdraw


@hookimpl
def plphp_collectors():
    return [LastTokenAttention, SnapKV, KeyNorm, Duplication, ClsAttention, Features]


@hookimpl
def plphp_allocators():
    return [VisionTiers, Uniform, Pyramid, PyramidStages, Withdraw]


@hookimpl
def plphp_selectors():
    return [HeadTopK, SharedTopK, AdaptiveTopK, RandomSelector, RandomShared, Diversity]


@hookimpl
def plphp_mergers():
    return [Contextual, Pool]


@hookimpl
def plphp_presets():
    return PRESETS
