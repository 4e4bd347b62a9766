"""The uncertainty of `plphp eval`: bootstrap intervals against a direct bootstrap, the exact McNemar
test against hand-computed values, and both as `summarize` reports them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plphp.evaluation.stats import RESAMPLES, bootstrap_ci, mcnemar_exact, paired_bootstrap_ci
from plphp.evaluation.summary import summarize


def _quantile(sorted_values: list[float], q: float) -> float:
    """The linear-interpolation quantile, by hand."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _direct_bootstrap(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """Resample the items one at a time, mean by mean, in plain Python."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        drawn = [values[int(rng.integers(0, len(values)))] for _ in range(len(values))]
        means.append(sum(drawn) / len(drawn))
    means.sort()
    return [_quantile(means, 0.025), _quantile(means, 0.975)]


def test_the_interval_is_the_direct_bootstrap_of_the_items():
    values = [1.0] * 13 + [0.0] * 7  # 65% exact match over 20 items
    low, high = bootstrap_ci(values)
    assert [low, high] == pytest.approx(_direct_bootstrap(values), abs=1e-12)
    assert low < 0.65 < high
    scores = [0.0, 0.25, 0.5, 1.0, 1.0, 0.75, 0.0, 1.0, 0.5, 1.0, 0.2]  # per-token accuracies
    assert bootstrap_ci(scores, seed=3) == pytest.approx(_direct_bootstrap(scores, seed=3), abs=1e-12)


def test_the_interval_is_seeded_and_near_the_normal_approximation_on_many_items():
    values = [1.0] * 300 + [0.0] * 200
    assert bootstrap_ci(values) == bootstrap_ci(values)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values)
    half = 1.96 * math.sqrt(0.6 * 0.4 / 500)
    low, high = bootstrap_ci(values)
    assert low == pytest.approx(0.6 - half, abs=0.01) and high == pytest.approx(0.6 + half, abs=0.01)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == [1.0, 1.0]
    assert bootstrap_ci([]) is None


def test_the_paired_interval_resamples_the_same_items_for_both():
    mine = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    full = [1, 1, 1, 1, 1, 1, 0, 1, 1, 0]
    difference = [float(a - b) for a, b in zip(mine, full)]
    assert paired_bootstrap_ci(mine, full) == pytest.approx(_direct_bootstrap(difference), abs=1e-12)
    assert paired_bootstrap_ci(mine, mine) == [0.0, 0.0]  # unpaired intervals would not give this
    with pytest.raises(ValueError, match="different lengths"):
        paired_bootstrap_ci([1, 0], [1])


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs():
    # b = 7 items only full got right, c = 1 only the policy: p = 2 · Σ_{k ≤ 1} C(8, k) / 2^8.
    assert mcnemar_exact(7, 1) == 2 * (math.comb(8, 0) + math.comb(8, 1)) / 2**8 == 0.0703125
    assert mcnemar_exact(1, 7) == 0.0703125
    assert mcnemar_exact(10, 0) == 2 / 2**10
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0  # capped at 1; no discordant pair
    assert mcnemar_exact(4, 2) == min(1.0, 2 * (1 + 6 + 15) / 2**6)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def _record(policy: str, index: int, right: bool, prediction: str) -> dict:
    return {
        "policy": policy,
        "id": f"q{index:02d}",
        "kind": "locate",
        "num_images": 1,
        "answer": "row 1",
        "prediction": prediction,
        "exact_match": right,
        "token_accuracy": 1.0 if right else 0.5,
        "kv_bytes_before": 1000,
        "kv_bytes_after": 1000 if policy == "full" else 400,
        "vision_kv_kept": 1.0 if policy == "full" else 0.3,
        "decode_seconds_per_token": 0.01,
        "recall": 1.0,
        "recall_per_layer": [1.0, 1.0],
    }


def constructed_records() -> list[dict]:
    """12 items: full right on 0–8; the pruned policy right on 0, 1 and 9 (b = 7 items only full got
    right, c = 1 only the policy), both wrong on 10 and 11 with different wrong answers on 11."""
    records = []
    for i in range(12):
        records.append(_record("full", i, i <= 8, "right" if i <= 8 else "wrong"))
        pruned_right = i in (0, 1, 9)
        records.append(
            _record("pruned", i, pruned_right, "right" if pruned_right else ("other" if i == 11 else "wrong"))
        )
    return records


def test_summarize_reports_intervals_and_the_paired_comparison_with_full():
    summary = summarize(constructed_records(), ["full", "pruned"])
    full, pruned = summary["full"], summary["pruned"]
    assert full["exact_match"] == 0.75 and pruned["exact_match"] == 0.25
    by_id = sorted(constructed_records(), key=lambda r: r["id"])
    full_values = [float(r["exact_match"]) for r in by_id if r["policy"] == "full"]
    pruned_values = [float(r["exact_match"]) for r in by_id if r["policy"] == "pruned"]
    assert full["exact_match_ci"] == pytest.approx(_direct_bootstrap(full_values), abs=1e-12)
    assert pruned["exact_match_ci"] == pytest.approx(_direct_bootstrap(pruned_values), abs=1e-12)
    tokens = [r["token_accuracy"] for r in by_id if r["policy"] == "pruned"]
    assert pruned["token_accuracy_ci"] == pytest.approx(_direct_bootstrap(tokens), abs=1e-12)
    versus = pruned["vs_full"]
    assert versus["items"] == 12 and versus["full_only"] == 7 and versus["policy_only"] == 1
    assert versus["mcnemar_p"] == 0.0703125
    assert versus["exact_match_diff"] == pytest.approx(-0.5)
    # Items 2–8 and 9 changed their answer, and 11 (both wrong, differently); 0, 1 and 10 did not.
    assert versus["changed"] == pytest.approx(9 / 12) and pruned["same_as_full"] == pytest.approx(3 / 12)
    differences = [a - b for a, b in zip(pruned_values, full_values)]
    assert versus["exact_match_diff_ci"] == pytest.approx(_direct_bootstrap(differences), abs=1e-12)
    assert full["vs_full"] is None  # full is the reference
    # Existing figures keep their meaning.
    assert pruned["kv_retained"] == pytest.approx(0.4) and pruned["items"] == 12


def test_without_full_there_is_no_paired_comparison():
    records = [r for r in constructed_records() if r["policy"] == "pruned"]
    summary = summarize(records, ["pruned"])
    assert summary["pruned"]["vs_full"] is None and summary["pruned"]["same_as_full"] is None
    assert summary["pruned"]["exact_match_ci"] is not None
