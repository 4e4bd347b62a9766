"""Answer quality under pruning, on the trained grid model that ships with plphp.

Greedy decoding on fixed held-out items (80 single-image questions, 40 multi-image `compare`
questions): deterministic, and seconds. Measured when the model was shipped (torch 2.13 CPU):

| policy | exact | single-image | multi-image | vision KV kept |
| --- | --- | --- | --- | --- |
| full | 0.758 | 0.938 | 0.400 | 100% |
| plphp (last token) | 0.683 | 0.825 | 0.400 | 55.0% |
| plphp-question | 0.733 | 0.900 | 0.400 | 55.6% |
| random at plphp-question's budgets | 0.758 | 0.938 | 0.400 | 55.6% |

Issue 6 asked for more than the shipped model gives, and these tests do not pretend otherwise:
multi-image accuracy is 27-40% (the bar is 90%); on this 8-layer model every pruned layer is
vision-attentive, so the default tiers remove 45% of the vision KV, not 50%; and random tokens
lose nothing here, because every patch carries its whole grid cell (docs/grid-model.md). The
floors below are the shipped figures less a small margin: they catch a regression of the model,
the loader or the backend, and the two comparisons that hold with a clear margin.
"""

from __future__ import annotations

import pytest
import torch

from plphp.evaluation.dataset import builtin_items
from plphp.evaluation.run import evaluate
from plphp.evaluation.runner import EvalSettings
from plphp.models.grid import load_grid_model
from plphp.tasks import SINGLE_IMAGE_KINDS

# plphp-question's own per-layer budgets (its collector and tiers), random tokens: equal KV by construction
RANDOM_AT_THE_SAME_BUDGETS = {"preset": "plphp-question", "selector": {"name": "random", "seed": 0}}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is tiny: one thread is fastest and keeps the run reproducible
    try:
        model, processor = load_grid_model()
        items = builtin_items(80, seed=0, kinds=SINGLE_IMAGE_KINDS) + builtin_items(40, seed=1, kinds=["compare"])
        out = evaluate(
            model,
            processor,
            items,
            policies={
                "full": "full",
                "plphp": "plphp",
                "plphp-question": "plphp-question",
                "random": RANDOM_AT_THE_SAME_BUDGETS,
            },
            out_dir=tmp_path_factory.mktemp("grid-quality"),
            settings=EvalSettings(batch_size=20, max_new_tokens=16, recall=False),
            run_info={"model": "grid", "dataset": "quality test"},
        )
    finally:
        torch.set_num_threads(threads)
    return out["policies"]


def _exact(row, group="all"):
    return row["exact_match"] if group == "all" else row["by_kind"][group]["exact_match"]


def test_the_shipped_model_answers_held_out_questions(results, capsys):
    full = results["full"]
    assert _exact(full, "single-image") >= 0.90, full["by_kind"]
    assert _exact(full, "multi-image") >= 0.30, full["by_kind"]  # issue 6's bar is 0.90: not reached
    with capsys.disabled():
        line = ", ".join(
            f"{name} {_exact(row):.3f} (vision KV {row['vision_kv_kept']:.3f})" for name, row in results.items()
        )
        print(f"\n  grid model, {full['items']} held-out items, exact match: {line}")


def test_plphp_question_keeps_95_percent_of_the_full_cache_accuracy(results):
    full, question = results["full"], results["plphp-question"]
    assert question["vision_kv_kept"] <= 0.6
    assert _exact(question) >= 0.95 * _exact(full)


def test_the_question_window_keeps_better_tokens_than_the_last_token_at_the_same_budget(results):
    question, last = results["plphp-question"], results["plphp"]
    assert abs(question["vision_kv_kept"] - last["vision_kv_kept"]) < 0.02
    assert _exact(question, "single-image") >= _exact(last, "single-image") + 0.05


def test_random_runs_at_exactly_the_same_budget(results):
    assert results["random"]["kv_bytes_after"] == results["plphp-question"]["kv_bytes_after"]
    assert results["random"]["vision_kv_kept"] == results["plphp-question"]["vision_kv_kept"]
