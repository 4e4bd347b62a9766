"""Each bad input a new user met, and the one-line plphp error it now gives (docs: configuration.md, Errors)."""

from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console

import plphp
from plphp.errors import ConfigError, PlphpError, PolicyContractError
from plphp.models import build_tiny_model, build_tiny_processor, make_image

PRESETS = re.escape(", ".join(repr(p) for p in sorted(plphp.get_registry().presets())))


def _message(call, *args, error=ConfigError, **kwargs) -> str:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- policy specs and configs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shown"), [(None, "None (NoneType)"), (42, "42 (int)"), (b"plphp", "b'plphp' (bytes)")]
)
def test_a_spec_that_is_no_name_path_mapping_or_policy(spec, shown):
    assert _message(plphp.load_policy, spec) == (
        f"policy: expected a preset name, a policy file (.yaml, .yml, .toml), a mapping or a Policy, got {shown}"
    )


@pytest.mark.parametrize(("preset", "shown"), [(True, "True"), (3, "3"), (["plphp"], "['plphp']"), ({}, "{}")])
def test_a_preset_that_is_not_a_string(preset, shown):
    message = _message(plphp.load_policy, {"preset": preset})
    assert re.fullmatch(
        rf"policy\.preset: must be a preset name \(a string\), got {re.escape(shown)}; presets are {PRESETS}", message
    )


@pytest.mark.parametrize("name", [3, None, ["uniform"], True])
def test_a_component_name_that_is_not_a_string(name):
    message = _message(plphp.load_policy, {"preset": "plphp", "allocator": {"name": name}})
    assert message == (
        f"policy.allocator.name: allocator needs a 'name' (a string), got {name!r}; registered allocators are "
        "'pyramid', 'pyramid_stages', 'uniform', 'vision_tiers', 'withdraw'"
    )


def test_a_json_policy_file_says_which_extensions_are_allowed(tmp_path):
    path = tmp_path / "pol.json"
    path.write_text('{"preset": "plphp"}')
    assert _message(plphp.load_policy, str(path)) == (
        f"policy file {str(path)!r}: unknown extension '.json'; allowed are .yaml, .yml, .toml (or give a preset name)"
    )
    missing = _message(plphp.load_policy, "nowhere.json")
    assert missing.startswith("policy: 'nowhere.json' is neither a registered preset nor an existing file; ")
    assert _message(plphp.load_policy, str(tmp_path)) == (
        f"policy: {str(tmp_path)!r} is a directory; give a preset name or a policy file (.yaml, .yml, .toml)"
    )


def test_broken_yaml_and_toml_name_the_line(tmp_path):
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text("policy:\n  preset: plphp\n  allocator: [unclosed\n")
    assert _message(plphp.load_policy, yaml_file) == (
        f"config file {str(yaml_file)!r} is not valid YAML: line 4, column 1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence at line 3, column 14)"
    )
    tabbed = tmp_path / "tabbed.yaml"
    tabbed.write_text("preset: plphp\n\tstart_layer: 1\n")
    assert "is not valid YAML: line 2, column 1: found character '\\t' that cannot start any token" in _message(
        plphp.load_policy, tabbed
    )
    toml_file = tmp_path / "broken.toml"
    toml_file.write_text('preset = "plphp"\nstart_layer = \n')
    assert _message(plphp.load_policy, toml_file) == (
        f"config file {str(toml_file)!r} is not valid TOML: line 2, column 15: Invalid value"
    )
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert _message(plphp.load_policy, binary).endswith("is not UTF-8 text (byte 0 cannot be decoded)")


def test_a_bool_is_not_a_number_but_an_int_is_a_float():
    assert _message(plphp.load_policy, "plphp", allocator={"retention": True}) == (
        "policy.allocator.retention: expected a number >= 0.0, <= 1.0, not a bool (got True)"
    )
    assert _message(plphp.load_policy, "plphp", start_layer=True) == (
        "policy.start_layer: expected a number >= 0, not a bool (got True)"
    )
    assert _message(plphp.load_policy, "plphp", collector={"window": False}) == (
        "policy.collector.window: expected a number or 'question', not a bool (got False)"
    )
    assert _message(plphp.load_policy, "pyramiddrop", allocator={"boundaries": [0.25, True]}) == (
        "policy.allocator.boundaries: item 1: expected a number, not a bool (got [0.25, True])"
    )
    assert _message(plphp.load_policy, "plphp", allocator={"retention": "0.3"}) == (
        "policy.allocator.retention: expected a number >= 0.0, <= 1.0, not a string (got '0.3')"
    )
    assert _message(plphp.load_policy, "full", allocator={"retention": float("nan")}) == (
        "policy.allocator.retention: Input should be a finite number (got nan)"
    )
    assert plphp.load_policy("full", allocator={"retention": 1}).allocator.params.retention == 1.0
    assert plphp.load_policy("plphp", collector={"window": "question"}).collector.params.window == "question"


def test_third_party_params_refuse_bools_too():
    from pydantic import Field

    class Threshold(plphp.Allocator):
        name = "threshold"

        class Params(plphp.Params):
            level: float = Field(0.5, ge=0.0)
            flag: bool = False

        def allocate(self, stats, prompt):
            return torch.ones(prompt.num_layers, prompt.batch_size)

    from plphp.validation import validate

    with pytest.raises(ConfigError, match=r"^level: expected a number >= 0.0, not a bool \(got True\)$"):
        validate(Threshold.Params, {"level": True}, "")
    assert Threshold.Params.model_validate({"level": 2, "flag": True}).flag is True


def test_components_built_in_python_give_the_same_one_line_errors():
    from plphp.policies.uniform import Uniform

    assert (
        _message(Uniform, retention=True)
        == "uniform.retention: expected a number >= 0.0, <= 1.0, not a bool (got True)"
    )
    assert _message(Uniform, retentoin=0.2).startswith("uniform.retentoin: unknown field; allowed fields are retention")
    assert Uniform(retention=1).params.retention == 1.0


def test_a_collector_without_gamma_feeding_vision_tiers_is_refused():
    assert _message(plphp.load_policy, "plphp", collector={"name": "key_norm"}) == (
        "policy.allocator: 'vision_tiers' allocates by each layer's vision attention γ, but collector 'key_norm' "
        "does not measure it; use a collector that does (last_token, snapkv) or an allocator that does not read it "
        "(pyramid, pyramid_stages, uniform, withdraw)"
    )
    assert plphp.load_policy("knorm").allocator.name == "uniform"
    from plphp.policies.key_norm import KeyNorm
    from plphp.policies.vision_tiers import VisionTiers

    assert not KeyNorm.measures_vision_attention and VisionTiers.needs_vision_attention
    assert plphp.Collector.measures_vision_attention and not plphp.Allocator.needs_vision_attention


def test_validator_messages_show_the_value_once():
    message = _message(plphp.load_policy, "plphp", collector={"window": 0})
    assert message == "policy.collector.window: window must be between 1 and 4096 tokens or 'question', got 0"
    message = _message(plphp.load_policy, "snapkv", collector={"kernel": 4})
    assert message == "policy.collector.kernel: kernel must be odd so the pooling stays centred, got 4"
    assert _message(plphp.load_policy, "fastv", selector={"x": 1}) == (
        "policy.selector.x: unknown field; no fields are allowed here"
    )
    assert _message(plphp.load_policy, {"preset": "plphp", "a\nb": 1}).startswith("policy.'a\\nb': unknown field")


# -- names --------------------------------------------------------------------------------------


def test_a_policy_from_a_file_is_named_by_its_name_field_or_its_stem(tmp_path):
    (tmp_path / "tight.yaml").write_text("preset: plphp\nallocator: {retention: 0.2}\n")
    (tmp_path / "other.toml").write_text('name = "my-plphp"\npreset = "plphp"\n')
    (tmp_path / "run.yaml").write_text("policy: fastv\n")
    tight = plphp.load_policy(tmp_path / "tight.yaml")
    assert tight.name == "tight" and tight.describe().startswith("tight: stage=decode")
    assert plphp.load_policy(tmp_path / "tight.yaml", start_layer=3).name == "tight"
    assert plphp.load_policy(tight, start_layer=3).name == "tight"
    assert plphp.load_policy(tmp_path / "other.toml").name == "my-plphp"
    assert plphp.load_policy(tmp_path / "run.yaml").name == "fastv", "a run config naming a preset keeps its name"
    assert plphp.load_policy("plphp").name == "plphp"
    assert plphp.load_policy({"preset": "snapkv", "allocator": {"retention": 0.2}}).name == "snapkv"
    assert plphp.load_policy({"allocator": {"name": "uniform"}}).name == "custom"
    assert plphp.load_policy({"name": "mine", "preset": "plphp"}).name == "mine"
    assert plphp.load_policy(plphp.load_policy("plphp"), preset="fastv").name == "fastv"
    assert (
        _message(plphp.load_policy, {"name": "a\nb"})
        == "policy.name: name must be one line of printable text, got 'a\\nb'"
    )
    assert _message(plphp.load_policy, {"name": 5}) == "policy.name: Input should be a valid string (got 5)"


def test_eval_labels_use_the_policy_name(tmp_path):
    from plphp.evaluation.run import _named

    (tmp_path / "a.yaml").write_text("name: wide\npreset: plphp\nallocator: {retention: 0.5}\n")
    (tmp_path / "b.yaml").write_text("preset: plphp\n")
    assert list(_named(["full", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])) == ["full", "wide", "b"]


# -- the session ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava():
    return build_tiny_model("llava", num_layers=4), build_tiny_processor("llava")


def test_start_layer_beyond_the_model_is_refused_when_the_session_starts(llava):
    model, _ = llava
    assert _message(plphp.apply, model, "plphp", start_layer=50) == (
        "policy.start_layer: 50 is not a layer of this model, which has 4 decoder layers; allowed are 0 to 3"
    )
    assert _message(plphp.apply, model, "fastv", start_layer=4).startswith("policy.start_layer: 4 is not a layer")
    plphp.apply(model, "plphp", start_layer=3, end_layer=10)  # prunes layer 3: accepted


def test_a_selector_returning_a_list_breaks_the_contract_in_the_session(llava):
    from plphp.policies.head_topk import HeadTopK
    from plphp.policies.last_token import LastTokenAttention
    from plphp.policies.uniform import Uniform

    class ListSelector(HeadTopK):
        name = "list_selector"

        def select(self, stats, retention, prompt, layer_idx):
            return super().select(stats, retention, prompt, layer_idx).tolist()

    model, processor = llava
    policy = plphp.Policy(LastTokenAttention(), Uniform(retention=0.5), ListSelector(), name="lists")
    from plphp.backends.inputs import chat_inputs

    inputs = chat_inputs(processor, [("what is this", [make_image(64, 64)])])
    with (
        pytest.raises(PolicyContractError, match=r"selector 'list_selector'.*list") as info,
        plphp.apply(model, policy),
    ):
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert "\n" not in str(info.value)


# -- run configs, images, model paths ---------------------------------------------------------


def _run_config(folder, images, path="llava-hf/x"):
    config = folder / "run.yaml"
    config.write_text(f"model:\n  path: {path}\ninputs:\n  prompt: hi\n  images: {images}\n")
    return config


def test_images_that_are_directories_or_not_images_are_refused(tmp_path):
    from plphp.runconfig import load_run_config

    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "pics").mkdir()
    make_image(32, 32).save(tmp_path / "ok.png")
    truncated = (tmp_path / "ok.png").read_bytes()[:60]
    (tmp_path / "cut.png").write_bytes(truncated)
    assert _message(load_run_config, _run_config(tmp_path, "[ok.png, notes.png]")) == (
        "inputs.images.1: 'notes.png' cannot be read as an image: not an image format Pillow can read"
    )
    assert _message(load_run_config, _run_config(tmp_path, "[.]")) == (
        f"inputs.images.0: '.' is a directory, not an image file (looked in {str(tmp_path)!r})"
    )
    assert _message(load_run_config, _run_config(tmp_path, "[pics]")).startswith(
        "inputs.images.0: 'pics' is a directory, not an image file"
    )
    assert _message(load_run_config, _run_config(tmp_path, "[cut.png]")).startswith(
        "inputs.images.0: 'cut.png' cannot be read as an image: "
    )
    assert _message(load_run_config, _run_config(tmp_path, "['']")) == (
        "inputs.images.0: the path is empty; give an image file, relative to the config file"
    )
    config, _ = load_run_config(_run_config(tmp_path, "[ok.png]"))
    assert config.inputs.images == [str(tmp_path / "ok.png")]


def test_generate_with_policy_names_an_image_that_breaks_after_the_config_was_read(tmp_path, llava):
    from plphp.backends.loading import generate_with_policy
    from plphp.runconfig import load_run_config

    make_image(32, 32).save(tmp_path / "ok.png")
    config, _ = load_run_config(_run_config(tmp_path, "[ok.png]"))
    (tmp_path / "ok.png").write_text("replaced by text")
    model, processor = llava
    message = _message(generate_with_policy, model, processor, config, None)
    assert (
        message
        == f"inputs.images.0: {str(tmp_path / 'ok.png')!r} cannot be read as an image: not an image format Pillow can read"
    )


def test_a_local_model_path_that_does_not_exist_says_so(tmp_path, monkeypatch):
    from plphp.backends.loading import load_model
    from plphp.runconfig import ModelSection

    missing = tmp_path / "no-model"
    assert _message(load_model, ModelSection(path=str(missing), device="cpu")) == (
        f"model.path: directory {str(missing)!r} does not exist"
    )
    monkeypatch.chdir(tmp_path)
    assert _message(load_model, ModelSection(path="./models/tiny", device="cpu")) == (
        f"model.path: directory './models/tiny' does not exist (relative to the working directory {str(tmp_path)!r})"
    )
    (tmp_path / "weights.bin").write_bytes(b"")
    assert _message(load_model, ModelSection(path="weights.bin", device="cpu")) == (
        "model.path: 'weights.bin' is a file; give a directory written by save_pretrained or a hub id"
    )
    assert _message(load_model, ModelSection(path="not a hub id!", device="cpu")) == (
        "model.path: 'not a hub id!' is neither an existing directory nor a hub id ('name' or 'namespace/name')"
    )
    (tmp_path / "empty").mkdir()
    assert _message(load_model, ModelSection(path=str(tmp_path / "empty"), device="cpu")).startswith(
        f"model.path: cannot load {str(tmp_path / 'empty')!r}: "
    )


def test_run_config_numbers_are_strict(tmp_path):
    from plphp.runconfig import load_run_config

    config = tmp_path / "run.yaml"
    config.write_text("model: {path: x}\ninputs: {prompt: hi}\ngeneration: {max_new_tokens: true}\n")
    assert _message(load_run_config, config) == (
        "generation.max_new_tokens: expected a number >= 1, <= 100000, not a bool (got True)"
    )
    config.write_text("model: {path: ''}\ninputs: {prompt: hi}\n")
    assert _message(load_run_config, config) == "model.path: String should have at least 1 character (got '')"


# -- dataset rows ---------------------------------------------------------------------------------


def test_dataset_rows_with_unreadable_images_or_odd_types_name_the_row(tmp_path):
    from plphp.evaluation.dataset import DatasetError, load_jsonl

    (tmp_path / "bad.png").write_text("text")
    (tmp_path / "pics").mkdir()
    data = tmp_path / "data.jsonl"
    cases = {
        '{"images": ["bad.png"], "question": "q", "answer": "a"}': (
            "data.jsonl line 1 (id 'line-1'): image 'bad.png' cannot be read as an image: "
            "not an image format Pillow can read"
        ),
        '{"images": ["pics"], "question": "q", "answer": "a"}': (
            f"data.jsonl line 1 (id 'line-1'): image 'pics' is a directory, not an image file (looked in {str(tmp_path)!r})"
        ),
        '{"id": [1], "question": "q", "answer": "a"}': "data.jsonl line 1: id must be a string or an integer, got [1]",
        '{"question": "q", "answer": "a", "kind": 3}': "data.jsonl line 1 (id 'line-1'): kind must be a string, got 3",
    }
    for row, expected in cases.items():
        data.write_text(row + "\n")
        assert _message(load_jsonl, data, error=DatasetError) == expected
    data.write_bytes(b"\xff\n")
    assert _message(load_jsonl, data, error=DatasetError) == (
        "dataset: data.jsonl is not UTF-8 text (byte 0 cannot be decoded)"
    )
    assert _message(load_jsonl, tmp_path, error=DatasetError) == (
        f"dataset: {str(tmp_path)!r} is a directory; give a .jsonl file"
    )


# -- the demo -------------------------------------------------------------------------------------


def test_demo_refuses_a_layer_the_model_does_not_have_before_it_runs(tmp_path):
    from plphp.demo import run_demo

    out = io.StringIO()
    with pytest.raises(ConfigError) as info:
        run_demo(Console(file=out), arch="llava", layer=99, png=tmp_path / "k.png")
    assert str(info.value) == (
        "--layer: 99 is not a layer of the llava model, which has 12 decoder layers; allowed are 0 to 11"
    )
    assert "policy:" not in out.getvalue(), "refused before the demo printed or generated anything"
    with pytest.raises(PlphpError, match=r"^--png: .* is a directory; give a file name such as plphp-demo.png$"):
        run_demo(Console(file=io.StringIO()), arch="llava", png=tmp_path)
    with pytest.raises(PlphpError, match=r"^--png: 'k.txt' has no picture extension; allowed are .*\.png"):
        run_demo(Console(file=io.StringIO()), arch="llava", png="k.txt")
    deep = tmp_path / "deep.yaml"
    deep.write_text("preset: plphp\nstart_layer: 40\n")
    out = io.StringIO()
    with pytest.raises(PlphpError, match=r"^policy.start_layer: 40 is not a layer of this model, which has 12 "):
        run_demo(Console(file=out), arch="llava", policy=str(deep), png=None)
    assert "Q1" not in out.getvalue(), "refused before generating"


def test_demo_names_a_policy_file_by_its_stem(tmp_path):
    from plphp.demo import run_demo

    (tmp_path / "half.yaml").write_text("preset: full\nallocator: {retention: 0.5}\n")
    out = io.StringIO()
    run_demo(Console(file=out, width=200), arch="llava", policy=str(tmp_path / "half.yaml"), max_new_tokens=2, png=None)
    text = out.getvalue()
    assert "policy: half: stage=decode" in text and "  half:" in text


def test_eval_checks_device_and_dtype_also_for_the_built_in_model():
    from typer.testing import CliRunner

    from plphp.cli import app

    result = CliRunner().invoke(app, ["eval", "--device", "bogus"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "model.device: 'bogus' is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'" in result.output
    result = CliRunner().invoke(app, ["eval", "--dtype", "float8"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "model.dtype: Input should be 'float32'" in result.output
