"""The lmms-eval model's `loglikelihood` (multiple-choice tasks): the context is prefilled and compressed,
the continuation scored on the pruned cache. It equals the masked reference (the dropped keys masked
to -inf for the continuation's tokens) on two architectures, for a left-padded batch of three
requests with two, one and no pictures. As lmms-eval's own models, it returns the loss (the mean
negative log-likelihood of the continuation's tokens)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("lmms_eval", reason="lmms-eval is installed by `make test` (see the Makefile)")

from lmms_eval.api.instance import Instance, unwrap_generation_output  # noqa: E402

from plphp.backends.inputs import chat_inputs  # noqa: E402
from plphp.evaluation.dataset import IMAGE_MARKER  # noqa: E402
from plphp.integrations.likelihood import continuation_logprobs  # noqa: E402
from plphp.integrations.lmms_eval import PlphpSimple  # noqa: E402
from plphp.models import make_image, save_tiny  # noqa: E402

TOLERANCE = 1e-5
DOCS = [
    {
        "images": [make_image(64, 96, seed=2), make_image(96, 64, seed=3)],
        "question": "compare the two",
        "choice": " red",
    },
    {"images": [make_image(64, 64, seed=4)], "question": "what is it", "choice": " a small blue square"},
    {"images": [], "question": "say something", "choice": " yes"},
]


def _requests() -> list[Instance]:
    return [
        Instance(
            request_type="loglikelihood",
            arguments=(doc["question"], doc["choice"], lambda d: d["images"], index, "tiny", "test"),
            idx=0,
            metadata={"task": "tiny", "doc_id": index, "repeats": 1, "split": "test"},
        )
        for index, doc in enumerate(DOCS)
    ]


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def lmm(request, tmp_path_factory):
    path = save_tiny(request.param, tmp_path_factory.mktemp(request.param))
    model = PlphpSimple.create_from_arg_string(
        f"pretrained={path},policy=plphp,start_layer=1,attn_implementation=eager,dtype=float32", {"batch_size": "3"}
    )
    model.task_dict = {"tiny": {"test": DOCS}}
    return model


def _reference(lmm, policy, materialize):
    inputs = chat_inputs(lmm.processor, [(d["question"], d["images"]) for d in DOCS], image_marker=IMAGE_MARKER)
    tokens = [lmm.tokenizer(d["choice"], add_special_tokens=False)["input_ids"] for d in DOCS]
    return continuation_logprobs(lmm.model, inputs, tokens, policy, materialize=materialize, pad_token_id=0)


def _pairs(responses):
    """`(loss, greedy)` per response, as lmms-eval's evaluator unwraps them."""
    return [unwrap_generation_output(response)[0] for response in responses]


def test_loglikelihood_on_the_pruned_cache_equals_the_masked_reference(lmm):
    scored = _pairs(lmm.loglikelihood(_requests()))
    masked = _reference(lmm, lmm.settings.policy, "mask")
    assert [greedy for _, greedy in scored] == masked.greedy
    for (loss, _), reference in zip(scored, masked.token_logprobs, strict=True):
        assert math.isfinite(loss) and abs(loss + sum(reference) / len(reference)) <= TOLERANCE
    full = _reference(lmm, "full", "prune")
    assert masked.report.vision_kv_reduction > 0.3
    assert max(abs(a - b) for a, b in zip(masked.logprobs[:2], full.logprobs[:2])) > TOLERANCE, (
        "the continuation saw the pruned cache"
    )
    for pruned_tokens, full_tokens in zip(masked.token_logprobs, full.token_logprobs):
        assert abs(pruned_tokens[0] - full_tokens[0]) <= TOLERANCE, "the first token comes from the exact prefill"
    records = lmm.records[-len(DOCS) :]
    assert [r["request_type"] for r in records] == ["loglikelihood"] * 3
    assert records[0]["vision_kv_removed"] > 0.3 and records[2]["vision_kv_removed"] == 0.0  # no picture


def test_a_continuation_scored_alone_scores_as_in_the_batch(lmm):
    """Left padding of the contexts and right padding of the continuations change nothing."""
    batch = [loss for loss, _ in _pairs(lmm.loglikelihood(_requests()))]
    for index, request in enumerate(_requests()):
        alone = _pairs(lmm.loglikelihood([request]))[0][0]
        assert abs(alone - batch[index]) <= TOLERANCE


def test_a_policy_leaves_prefill_exact_so_a_one_token_continuation_is_unchanged(lmm):
    inputs = chat_inputs(lmm.processor, [(DOCS[1]["question"], DOCS[1]["images"])])
    with torch.no_grad():
        plain = torch.log_softmax(lmm.model(**inputs).logits[:, -1].double(), -1)[0, 7]
    pruned = continuation_logprobs(lmm.model, inputs, [[7]], lmm.settings.policy)
    assert abs(pruned.logprobs[0] - float(plain)) <= TOLERANCE
