"""`--model_args` of the lmms-eval model: policy overrides reach the policy, and bad arguments are refused
in one line that names the argument (before any model is loaded)."""

from __future__ import annotations

import pytest

from plphp.errors import ConfigError
from plphp.integrations.lmms_args import harness_args, parse_model_args
from plphp.integrations.lmms_summary import option_value, summarize_requests, summary_path


def test_overrides_reach_the_policy():
    settings = parse_model_args(
        {"policy": "plphp", "retention": 0.4, "allocator.alpha": 0.5, "start_layer": 3, "batch_size": 8}
    )
    allocator = settings.policy.allocator.params
    assert (allocator.retention, allocator.alpha, settings.policy.start_layer) == (0.4, 0.5, 3)
    assert settings.args.batch_size == 8 and settings.args.pretrained == "grid" and not settings.pretrained_given
    assert settings.overrides == {"allocator": {"retention": 0.4, "alpha": 0.5}, "start_layer": 3}
    assert parse_model_args({"policy": "full"}).policy.name == "full"


@pytest.mark.parametrize(
    ("model_args", "named"),
    [
        ({"retnetion": 0.3}, "'retnetion'"),  # an unknown key, with the closest allowed one
        ({"policy": "plhp"}, "policy='plhp'"),  # a policy that does not exist
        ({"retention": "abc"}, "retention='abc'"),  # a non-numeric retention
        ({"retention": 1.5}, "retention=1.5"),
        ({"allocator.nope": 1}, "allocator.nope=1"),
        ({"batch_size": "x"}, "model_args.batch_size"),
        ({"dtype": "int8"}, "model_args.dtype"),
    ],
)
def test_bad_model_args_are_one_line_errors_naming_the_argument(model_args, named):
    with pytest.raises(ConfigError) as caught:
        parse_model_args(model_args)
    message = str(caught.value)
    assert "\n" not in message and named in message, message
    if "retnetion" in model_args:
        assert "did you mean 'retention'" in message


def test_the_harness_options_fill_what_model_args_leave_out():
    assert harness_args({"batch_size": "4", "max_batch_size": None, "device": None}, {}) == {"batch_size": 4}
    assert harness_args({"batch_size": "4"}, {"batch_size": 2}) == {}
    with pytest.raises(ConfigError, match="--batch_size: 'auto'"):
        harness_args({"batch_size": "auto"}, {})


def test_the_summary_lands_beside_the_results_or_where_asked(tmp_path):
    argv = ["lmms_eval", "--model", "plphp", "--output_path", str(tmp_path), "--model_args=policy=full"]
    assert option_value(argv, "--output_path") == str(tmp_path) and option_value(argv, "--model_args") == "policy=full"
    assert summary_path(None, tmp_path / "grid", "20260101_000000") == tmp_path / "grid" / "20260101_000000_plphp.json"
    assert summary_path(str(tmp_path / "s.json"), tmp_path, "x") == tmp_path / "s.json"
    assert summary_path(None, None, "x") is None


def test_task_figures_are_means_over_requests():
    records = [
        {
            "task": "a",
            "kv_bytes_before": 100,
            "kv_bytes_after": 40,
            "vision_kv_removed": 0.8,
            "decode_ms_per_token": 2.0,
        },
        {
            "task": "a",
            "kv_bytes_before": 300,
            "kv_bytes_after": 160,
            "vision_kv_removed": 0.6,
            "decode_ms_per_token": None,
        },
    ]
    figures = summarize_requests(records)["a"]
    assert figures["requests"] == 2 and figures["kv_bytes_before"] == 200 and figures["kv_bytes_after"] == 100
    assert figures["kv_saved"] == pytest.approx(0.5) and figures["vision_kv_removed"] == pytest.approx(0.7)
    assert figures["decode_ms_per_token"] == 2.0


def test_the_lmms_model_refuses_bad_model_args_before_loading_anything():
    lmms_eval = pytest.importorskip("lmms_eval.models", reason="lmms-eval is installed by `make test`")
    model_class = lmms_eval.get_model("plphp")
    with pytest.raises(ConfigError) as caught:
        model_class.create_from_arg_string("policy=plphp,retention=abc", {"batch_size": "1"})
    assert "\n" not in str(caught.value) and "retention='abc'" in str(caught.value)
