"""`plphp.testing`: check a pruning policy against plphp's correctness contract (docs/architecture.md, "The correctness contract").

What a researcher runs on a new policy::

    from plphp.testing import check_policy

    def test_my_policy():
        check_policy({"preset": "plphp", "selector": {"name": "my_selector"}})

`check_policy` first checks the components on random tensors (fast, precise messages), then runs
the policy with `generate()` on tiny random models of every supported architecture, a single
prompt and a left-padded batch of three with different image counts, and checks:

- pruning ("prune") equals the masked reference ("mask") within the tolerance;
- a decode-stage policy leaves the first token's logits exact (prefill is not pruned);
- an input-stage policy equals the model run on `inputs_embeds` of the kept (merged) features alone,
  with the original position ids passed explicitly or, with `positions: compact`, consecutive ones;
- every pruned layer keeps its budget, kept positions are vision tokens, text stays whole;
- the cache holds exactly the text plus the kept vision tokens, and its bytes match the report.

Any failure raises `PolicyCheckError` naming the architecture, the batch and what is wrong. This
module is also a pytest plugin (entry point `pytest11`): the fixtures `check_policy` and
`tiny_vlm` are available in any test of a project that has plphp installed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch

from plphp.contract import check_deterministic, check_keep_indices, check_merge, check_shared_keep, check_stats
from plphp.errors import PlphpError
from plphp.ops import budget_per_sample
from plphp.policy import Policy, load_policy
from plphp.stats import PromptInfo, VisionStats

#: Maximum logit difference between "prune" and "mask" (float32, eager attention). Removing entries
#: changes the order eager attention sums in, and the tiny models' large weights amplify it: snapkv
#: (decode stage) on LLaVA-NeXT measured 1.24e-5 after 4 tokens on the dependency set of 2026-12
#: (transformers 5.23 and 5.24 alike). A real error shows as ~1e-1.
TOLERANCE = 2e-5
#: Maximum logit difference between the input stage and the model run on the kept features alone.
INPUT_TOLERANCE = 1e-5
NEW_TOKENS = 4


class PolicyCheckError(AssertionError):
    """A policy broke the contract; the message says where and how."""


@dataclass(frozen=True)
class TinyVLM:
    """A tiny random model of one architecture with its processor and prepared inputs.

    `tiny_vlm(name)` builds one of plphp's; build one yourself to check a model plphp does not ship
    (`check_policy(policy, architectures=[TinyVLM("mine", model, processor, inputs)])`), with
    `inputs` holding a "batch1" and a "batch3" (`plphp.backends.inputs.chat_inputs` makes them).
    """

    architecture: str
    model: Any
    processor: Any
    inputs: Mapping[str, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class CaseResult:
    """What `check_policy` measured on one (architecture, batch)."""

    architecture: str
    batch: str
    max_logit_diff: float
    vision_kv_reduction: float
    #: Why the case did not run: the architecture refuses the policy (a one-line `ConfigError`, e.g.
    #: a prefill-stage start inside Qwen3-VL's DeepStack layers); empty when it ran.
    skipped: str = ""


@functools.cache
def tiny_vlm(architecture: str) -> TinyVLM:
    """Build (once per process) a tiny random model of `architecture` and its test inputs.

    Inputs: "batch1" (one image), "batch3" (left padding; 2, 1 and 0 images) and, for architectures
    that take video (`plphp.models.video.VIDEO_ARCHITECTURES`), "video" (an image sample and a
    6-frame video sample, left-padded).
    """
    from plphp.backends.inputs import chat_inputs
    from plphp.models import build_tiny_model, build_tiny_processor, make_image
    from plphp.models.video import VIDEO_ARCHITECTURES, make_video, video_chat_inputs

    model = build_tiny_model(architecture, seed=0)
    processor = build_tiny_processor(architecture)
    single = chat_inputs(processor, [("describe the picture", [make_image(64, 64, seed=1)])])
    batch = chat_inputs(
        processor,
        [
            ("compare the two pictures", [make_image(64, 96, seed=2), make_image(96, 64, seed=3)]),
            ("what is this", [make_image(128, 96, seed=4)]),
            ("say something about the weather", []),
        ],
    )
    inputs = {"batch1": single, "batch3": batch}
    if architecture in VIDEO_ARCHITECTURES:
        # An image sample and a video sample (6 frames), left-padded: mixed image-and-video batches.
        inputs["video"] = video_chat_inputs(
            processor,
            [
                ("describe the picture", [make_image(96, 64, seed=5)], []),
                ("what happens in the video", [], [make_video(6, 64, 48, seed=6)]),
            ],
        )
    return TinyVLM(architecture, model, processor, inputs)


# -- component checks on random tensors -----------------------------------------------------------


def random_prompt(
    batch: int = 3,
    length: int = 40,
    images: Sequence[Sequence[tuple[int, int]]] = (((3, 8), (14, 6)), ((5, 12),), ()),
    padding: Sequence[int] = (0, 4, 9),
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_dim: int = 8,
    layer_range: tuple[int, int] | None = None,
) -> PromptInfo:
    """A `PromptInfo` with images at given `(start, count)` spans and left padding per sample."""
    vision = torch.zeros(batch, length, dtype=torch.bool)
    segments = torch.full((batch, length), -1, dtype=torch.long)
    valid = torch.ones(batch, length, dtype=torch.bool)
    for b in range(batch):
        valid[b, : padding[b]] = False
        for image, (start, count) in enumerate(images[b]):
            vision[b, padding[b] + start : padding[b] + start + count] = True
            segments[b, padding[b] + start : padding[b] + start + count] = image
    return PromptInfo(vision, segments, valid, num_layers, num_heads, num_kv_heads, head_dim, layer_range)


def check_components(policy: Policy, prompt: PromptInfo | None = None, seed: int = 0) -> None:
    """Run the policy's collector, allocator and selector on random tensors and check their outputs."""
    prompt = prompt or random_prompt(layer_range=(policy.start_layer, policy.end_layer or 4))
    generator = torch.Generator().manual_seed(seed)
    if policy.stage == "input":
        _check_input_components(policy, prompt, generator)
        return
    shape = (prompt.batch_size, prompt.num_heads, prompt.length, prompt.head_dim)
    stats = []
    for layer in range(prompt.num_layers):
        query = torch.randn(shape, generator=generator)
        key = torch.randn(prompt.batch_size, prompt.num_kv_heads, prompt.length, prompt.head_dim, generator=generator)
        extra = {}
        if policy.collector.reads_hidden_states:
            extra["hidden_states"] = torch.randn(prompt.batch_size, prompt.length, 16, generator=generator)
        layer_stats = policy.collector.collect(query, key, prompt, layer, prompt.head_dim**-0.5, **extra)
        try:
            check_stats(layer_stats, prompt, f"collector {policy.collector.name!r}", full=True)
        except PlphpError as exc:
            raise PolicyCheckError(str(exc)) from None
        stats.append(layer_stats)
    try:
        retention = policy.retention(stats, prompt)
    except PlphpError as exc:
        raise PolicyCheckError(str(exc)) from None
    for layer in range(prompt.num_layers):
        if not policy.prunes_layer(layer):
            continue
        who = f"selector {policy.selector.name!r} (layer {layer})"
        budget = budget_per_sample(retention[layer], prompt)
        keep = policy.selector.select(stats[layer], retention[layer], prompt, layer)
        again = policy.selector.select(stats[layer], retention[layer], prompt, layer)
        try:
            check_keep_indices(keep, prompt, budget, who, head_budgets=policy.selector.head_budgets)
            if not policy.selector.per_head:
                check_shared_keep(keep, who, "it declares per_head = False")
            check_deterministic(keep, again, who)
        except PlphpError as exc:
            raise PolicyCheckError(str(exc)) from None


def random_vision(prompt: PromptInfo, dim: int = 8, generator: torch.Generator | None = None) -> VisionStats:
    """Random `VisionStats` for `prompt`: features, a tower statistic at vision positions, each image a
    square-ish grid of cells (its last row short)."""
    batch, length = prompt.batch_size, prompt.length
    features = torch.randn(batch, length, dim, generator=generator)
    tower = torch.rand(batch, length, generator=generator).masked_fill(~prompt.vision_mask, float("nan"))
    cells = []
    for b in range(batch):
        sample = []
        for segment in prompt.segments(b):
            side = max(1, round(len(segment) ** 0.5))
            sample.append(tuple((0, i // side, i % side) for i in range(len(segment))))
        cells.append(tuple(sample))
    return VisionStats(features=features, tower_attention=tower, cells=tuple(cells))


def _check_input_components(policy: Policy, prompt: PromptInfo, generator: torch.Generator) -> None:
    """The input stage's components on random vision statistics: stats, budget, shared keep-set, merge."""
    vision = random_vision(prompt, generator=generator)
    try:
        stats = policy.collector.collect_vision(vision, prompt)
        check_stats(stats, prompt, f"collector {policy.collector.name!r}", full=True)
        retention = policy.retention([stats] * prompt.num_layers, prompt)[0]
        budget = budget_per_sample(retention, prompt)
        who = f"selector {policy.selector.name!r} (input stage)"
        keep = policy.selector.select(stats, retention, prompt, 0)
        check_keep_indices(keep, prompt, budget, who)
        check_shared_keep(keep, who, "the input stage feeds one set of tokens to every head")
        check_deterministic(keep, policy.selector.select(stats, retention, prompt, 0), who)
        if policy.merger is not None:
            merged = policy.merger.budget(budget, vision, prompt)
            assignment = policy.merger.merge(keep[:, 0], stats, vision, prompt)
            check_merge(assignment, merged, prompt, f"merger {policy.merger.name!r}")
    except PlphpError as exc:
        raise PolicyCheckError(str(exc)) from None


# -- model checks ------------------------------------------------------------------------------------


def _generate(model: Any, inputs: Mapping[str, torch.Tensor], policy: Policy | None, materialize: str):
    import plphp

    def run():
        with torch.inference_mode():
            return model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                output_logits=True,
                return_dict_in_generate=True,
            )

    if policy is None:
        return run(), None
    with plphp.apply(model, policy, materialize=materialize) as session:
        out = run()
    return out, session.report


def _check_report(report: Any, inputs: Mapping[str, torch.Tensor], policy: Policy, model: Any, where: str) -> None:
    from plphp.registry import get_registry
    from plphp.report import kv_entry_bytes

    adapter = get_registry().adapter_for(model)
    valid = inputs["attention_mask"].bool()
    vision = adapter.vision_mask(inputs["input_ids"]) & valid
    text = (valid & ~vision).sum(-1)  # [B]
    for layer in report.layers:
        if not layer.pruned:
            continue
        at = f"{where}, layer {layer.layer_idx}"
        keep = layer.kept_positions
        kept_valid = keep >= 0
        hits = torch.gather(vision[:, None, :].expand(-1, keep.shape[1], -1), 2, keep.clamp(min=0))
        if (kept_valid & ~hits).any():
            raise PolicyCheckError(f"{at}: a kept position is not a vision token")
        counts = kept_valid.sum(-1)
        if not torch.equal(counts, layer.kept.to(counts.device)):
            raise PolicyCheckError(f"{at}: the report's kept counts {layer.kept.tolist()} differ from its positions")
        budget = torch.tensor(layer.budget)
        if policy.selector.head_budgets and policy.stage == "decode":
            if not torch.equal(counts.sum(-1), budget * counts.shape[1]):
                raise PolicyCheckError(f"{at}: kept {counts.sum(-1).tolist()} over the heads; budget {layer.budget}")
        elif not torch.equal(counts, budget[:, None].expand_as(counts)):
            raise PolicyCheckError(f"{at}: kept {counts.tolist()} per (sample, head); budget {layer.budget}")
        # The cache holds every text token plus the kept vision tokens, padded to the longest row.
        width = int((text[:, None] + counts).max())
        if layer.physical_length != width:
            raise PolicyCheckError(
                f"{at}: the cache holds {layer.physical_length} slots per head, but text plus kept vision tokens "
                f"need {width}: text was dropped or dropped tokens stayed"
            )
        element = torch.finfo(model.dtype).bits // 8
        expected = report.layer_kv_bytes_formula(
            layer, text.tolist(), entry_bytes=kv_entry_bytes(adapter.head_dim, element)
        )
        if layer.kv_bytes_after != expected:
            raise PolicyCheckError(f"{at}: kv_bytes_after is {layer.kv_bytes_after}, the tensors need {expected}")


def _check_input_reference(
    model: Any,
    inputs: Mapping[str, torch.Tensor],
    policy: Policy,
    report: Any,
    pruned: Any,
    where: str,
    tolerance: float,
) -> None:
    """The input-stage contract: generation equals the model on `inputs_embeds` of the kept tokens alone."""
    from plphp.backends.input_reference import input_reference

    reference = input_reference(model, inputs, report, policy.positions, NEW_TOKENS)
    diff = max(float((a - b).abs().max()) for a, b in zip(pruned.logits, reference.logits, strict=True))
    if diff > tolerance:
        raise PolicyCheckError(
            f"{where}: the input stage differs from the model run on the kept features alone by {diff:.2e} "
            f"(positions {policy.positions!r}, tolerance {tolerance:.0e})"
        )
    if not torch.equal(pruned.sequences[:, -NEW_TOKENS:], reference.sequences[:, -NEW_TOKENS:]):
        raise PolicyCheckError(f"{where}: the input stage generated other tokens than the kept-features reference")


def check_policy(
    policy: str | Mapping[str, Any] | Policy,
    architectures: Iterable[str | TinyVLM] | None = None,
    batches: Iterable[str] = ("batch1", "batch3"),
    tolerance: float = TOLERANCE,
    **overrides: Any,
) -> list[CaseResult]:
    """Check `policy` against the contract on tiny models; raise `PolicyCheckError` on the first failure.

    Args:
        policy: a preset name, a config dict or file, or a `Policy` (as `plphp.load_policy` takes).
        architectures: which tiny architectures to run (default: every one `plphp.models` builds,
            `plphp.models.ARCHITECTURES`); a `TinyVLM` of your own runs a model plphp does not
            build (an architecture a plugin adds an adapter for), on the inputs it holds.
        batches: "batch1" (one image), "batch3" (left padding; 2, 1 and 0 images) and / or "video"
            (an image sample and a video sample; architectures without video input skip it): keys
            of each `TinyVLM.inputs`.
        tolerance: maximum logit difference between pruning and the masked reference.
        **overrides: merged into the policy config.

    Returns:
        One `CaseResult` per (architecture, batch), with the measured difference and KV reduction;
        where the architecture refuses the policy (a layer range it cannot honour), the case is not
        run and its `skipped` holds the refusal.
    """
    from plphp.models import ARCHITECTURES

    resolved = load_policy(policy, **overrides)
    check_components(resolved)
    results = []
    for architecture in ARCHITECTURES if architectures is None else architectures:
        vlm = architecture if isinstance(architecture, TinyVLM) else tiny_vlm(architecture)
        architecture = vlm.architecture
        model = vlm.model
        if refusal := _refusal(model, resolved):
            results.extend(CaseResult(architecture, batch, float("nan"), float("nan"), refusal) for batch in batches)
            continue
        # The reference is eager attention; the shared model gets back whatever it had before.
        before = model.config.get_text_config(decoder=True)._attn_implementation
        model.set_attn_implementation({"text_config": "eager"})
        try:
            for batch in batches:
                if batch not in vlm.inputs and batch == "video":
                    continue
                where = f"policy {resolved.name!r} ({resolved.stage} stage) on {architecture}, {batch}"
                inputs = vlm.inputs[batch]
                try:
                    pruned, report = _generate(model, inputs, resolved, "prune")
                    masked, _ = _generate(model, inputs, resolved, "mask")
                except PlphpError as exc:
                    raise PolicyCheckError(f"{where}: {exc}") from None
                diff = max(float((a - b).abs().max()) for a, b in zip(pruned.logits, masked.logits, strict=True))
                if diff > tolerance:
                    raise PolicyCheckError(
                        f"{where}: pruning differs from the masked reference by {diff:.2e} (tolerance {tolerance:.0e})"
                    )
                if not torch.equal(pruned.sequences, masked.sequences):
                    raise PolicyCheckError(f"{where}: pruning generated other tokens than the masked reference")
                if resolved.stage == "decode":
                    plain, _ = _generate(model, inputs, None, "prune")
                    first = float((plain.logits[0] - pruned.logits[0]).abs().max())
                    if first > tolerance:
                        raise PolicyCheckError(
                            f"{where}: the first token's logits differ from the unpruned model by {first:.2e}; "
                            "a decode-stage policy must leave prefill exact"
                        )
                _check_report(report, inputs, resolved, model, where)
                if resolved.stage == "input":
                    _check_input_reference(model, inputs, resolved, report, pruned, where, INPUT_TOLERANCE)
                results.append(CaseResult(architecture, batch, diff, report.vision_kv_reduction))
        finally:
            model.set_attn_implementation({"text_config": before})
    return results


def _refusal(model: Any, policy: Policy) -> str:
    """The one-line error with which `model`'s adapter refuses `policy`'s layer range, or "".

    A `start_layer` past the model's depth is no refusal of the architecture's: it fails the check.
    """
    from plphp.backends.layer_range import check_layer_range
    from plphp.errors import ConfigError
    from plphp.registry import get_registry

    adapter = get_registry().adapter_for(model)
    if policy.start_layer >= adapter.num_layers:
        return ""
    try:
        check_layer_range(policy, adapter)
    except ConfigError as exc:
        return str(exc)
    return ""


def with_stage(policy: str | Mapping[str, Any] | Policy, stage: str) -> Policy:
    """`policy` run at another stage (a prefill-stage policy's keep-sets applied to the KV cache)."""
    resolved = load_policy(policy)
    config = dict(resolved.config, stage=stage, preset=None)
    out = load_policy(config)
    return replace(out, name=f"{resolved.name}@{stage}")


# -- pytest plugin ------------------------------------------------------------------------------------


@pytest.fixture(name="check_policy")
def _check_policy_fixture():
    """The `check_policy` function, for tests of packages that add policies."""
    return check_policy


@pytest.fixture(name="tiny_vlm")
def _tiny_vlm_fixture():
    """A function building (once) a tiny random model of a named architecture with test inputs."""
    return tiny_vlm
