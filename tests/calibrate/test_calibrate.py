"""`plphp.calibrate` on the grid model: the retention target holds on held-out items, the tiers split the
pruned layers, the recall search beats the base policy at the same budget, and bad inputs are one-line errors.

Fitted on built-in tasks of seed 0, checked on seed 1 (other scenes and questions).
"""

from __future__ import annotations

import pytest
import torch

from plphp.calibrate import Calibration, CalibrationError, calibrate, write_calibration
from plphp.calibrate.measure import kept_per_item, make_batches, prefill, recall_per_item, stop_ids
from plphp.evaluation.dataset import builtin_items
from plphp.models.builtin import load_builtin_model
from plphp.policy import load_policy


@pytest.fixture(scope="module")
def grid():
    model, processor, _ = load_builtin_model("grid")
    return model, processor


@pytest.fixture(scope="module")
def fit_items():
    return builtin_items(12, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return builtin_items(12, seed=1)


@pytest.fixture(scope="module")
def halved(grid, fit_items) -> Calibration:
    return calibrate(*grid, fit_items, "plphp", target_removed=0.5)


def removed_per_item(model, processor, items, policy) -> list[float]:
    """Each item alone: its report's vision_kv_reduction (the quantity the target is set on)."""
    out = []
    for batch in make_batches(processor, items, 1, model.device):
        report, _ = prefill(model, batch, policy)
        out.append(report.vision_kv_reduction)
        assert abs(1 - kept_per_item(report, batch)[0] - report.vision_kv_reduction) < 1e-9
    return out


def test_target_removed_holds_on_held_out_items(grid, halved, held_out):
    assert abs(halved.removed - 0.5) < 0.01  # on the fitting items
    removed = removed_per_item(*grid, held_out, halved.policy)
    assert abs(sum(removed) / len(removed) - 0.5) <= 0.02, removed


def test_alpha_and_beta_split_the_pruned_layers_into_tiers(halved):
    tiers = [tier for tier in halved.tiers() if tier != "unpruned"]
    assert len(tiers) == 6 and len(set(tiers)) >= 2, tiers
    assert tiers.count("attentive") == tiers.count("balanced") == tiers.count("indifferent") == 2  # tertiles
    params = halved.policy.allocator.params
    assert params.beta <= params.alpha and halved.policy.name == "calibrated"
    assert halved.recall is not None and halved.base_recall is not None


def test_solved_kept_share_equals_the_real_reports(halved):
    for result in halved.results:
        assert abs(result.mean_kept - result.solved.predicted) < 1e-9


def test_the_yaml_loads_and_the_report_is_written(halved, tmp_path):
    policy_path, base_path, json_path = write_calibration(halved, tmp_path / "cal.yaml")
    loaded = load_policy(policy_path)
    assert loaded.name == "calibrated"
    assert loaded.allocator.params == halved.policy.allocator.params
    assert loaded.collector.params == halved.policy.collector.params
    assert load_policy(base_path).name == "plphp-at-budget"
    report = json_path.read_text()
    assert '"gamma_mean"' in report and '"alpha_beta"' in report


def test_recall_search_beats_the_default_at_the_same_budget_on_held_out_items(grid, held_out):
    model, processor = grid
    found = calibrate(model, processor, builtin_items(8, seed=0), "plphp", target_removed=0.5, maximize="recall")
    assert found.settings["candidates"] >= 20
    assert found.recall >= found.base_recall
    batches = make_batches(processor, held_out, 4, model.device)
    recalls: dict[str, list[float]] = {"calibrated": [], "base": []}
    stops = stop_ids(model, processor)
    for batch in batches:
        reports = {"calibrated": prefill(model, batch, found.policy)[0], "base": prefill(model, batch, found.base)[0]}
        for name, values in recall_per_item(model, batch, reports, 8, stops).items():
            recalls[name].extend(values)
    calibrated, base = (torch.tensor(recalls[n]).nanmean().item() for n in ("calibrated", "base"))
    assert calibrated >= base, (calibrated, base)
    for policy in (found.policy, found.base):  # both at the budget on the held-out items too
        removed = removed_per_item(model, processor, held_out, policy)
        assert abs(sum(removed) / len(removed) - 0.5) <= 0.02


def test_target_retention_and_the_fixed_delta_rule(grid, fit_items):
    found = calibrate(*grid, fit_items[:4], "plphp", target_retention=0.5, delta_rule="fixed", recall=False)
    assert abs(found.kept - 0.5) < 0.02 and found.policy.allocator.params.delta == pytest.approx(0.1)
    assert found.recall is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_removed": 0.5, "target_retention": 0.5}, "not both"),
        ({"target_removed": 0.8}, "removes between 0.0% and 75.0%"),
        ({"target_removed": 0.5, "base_policy": "snapkv"}, "allocator 'vision_tiers'"),
        ({"target_removed": 0.5, "maximize": "accuracy"}, "maximize"),
        ({"target_removed": 1.5}, "between 0 and 1"),
    ],
)
def test_bad_inputs_are_one_line_errors(grid, fit_items, kwargs, message):
    kwargs = {"base_policy": "plphp", **kwargs}
    with pytest.raises(CalibrationError) as raised:
        calibrate(*grid, fit_items[:4], kwargs.pop("base_policy"), **kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)
