"""`plphp calibrate` run the way a user runs it."""

from __future__ import annotations

import json

import pytest

from plphp.policy import load_policy
from tests.test_cli import plphp_cli


def test_calibrate_writes_a_policy_a_base_and_a_report(tmp_path):
    out = tmp_path / "fit.yaml"
    result = plphp_cli("calibrate", "--target-removed", "0.5", "--num-items", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "vision KV removed" in result.stdout and "γ per layer" in result.stdout and "rule 1" in result.stdout
    policy = load_policy(out)
    assert policy.name == "calibrated" and policy.allocator.name == "vision_tiers"
    report = json.loads((tmp_path / "fit.json").read_text())
    assert abs(report["removed"] - 0.5) < 0.02 and len(report["layers"]) == 8
    assert load_policy(tmp_path / "fit-base.yaml").name == "plphp-at-budget"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-removed", "0.5", "--target-retention", "0.5"], "exclude each other"),
        (["--target-removed", "0.8"], "out of reach"),
        (["--policy", "snapkv"], "allocator 'vision_tiers'"),
        (["--maximize", "accuracy"], "--maximize"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    result = plphp_cli("calibrate", "--num-items", "4", "--out", str(tmp_path / "x.yaml"), *args)
    assert result.returncode == 2
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stdout
    assert not (tmp_path / "x.yaml").exists()
