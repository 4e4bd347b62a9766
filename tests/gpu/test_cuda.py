"""The GPU path: the contract on CUDA, half precision, sdpa and flash attention, `device_map`, the bench.

Marked `cuda` and skipped without a CUDA device. `benchmarks/gpu/check.sh` runs them; with
`PLPHP_TEST_DEVICE=cpu` (its `--cpu-dry-run`) the same tests run on the CPU, so that every line of
them has run before a GPU is at hand. Measured figures (logit differences, token agreement) go to
`$PLPHP_GPU_OUT/cuda-tests.json` when that variable is set (see conftest.py).

Tolerances, stated:
- float32, prune vs the masked reference: logits within `FLOAT32_TOLERANCE` (5e-5; the CPU contract
  holds 1e-5 with eager and 3e-5 with sdpa, and CUDA kernels sum in other orders), same tokens.
- float16 / bfloat16: every logit finite; while a sample's tokens agree, its logits differ by at most
  `HALF_TOLERANCE[dtype]` times the largest logit; a sample's tokens may part only at a step where
  the masked run's two best logits are within twice that (a near-tie that rounding can flip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plphp
from plphp.backends.inputs import chat_inputs
from plphp.models import ARCHITECTURES, build_tiny_model, build_tiny_processor, make_image
from plphp.testing import _refusal

DEVICE = torch.device(os.environ.get("PLPHP_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]
FLOAT32_TOLERANCE = 5e-5
HALF_TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 8e-2}
NEW_TOKENS = 6
POLICIES = ("plphp", "adakv", "fastv")


def _inputs(architecture: str) -> dict[str, dict[str, torch.Tensor]]:
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
    return {"batch1": single, "batch3": batch}


def _to(inputs, device, dtype=None):
    def move(value):
        if not isinstance(value, torch.Tensor):
            return value
        if dtype is not None and value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device)

    return {key: move(value) for key, value in inputs.items()}


def _generate(model, inputs, policy=None, materialize="prune"):
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


@pytest.fixture(scope="module", params=ARCHITECTURES)
def float32_model(request):
    architecture = request.param
    model = build_tiny_model(architecture, seed=0, device=DEVICE)
    return architecture, model, {name: _to(batch, DEVICE) for name, batch in _inputs(architecture).items()}


def test_full_is_bit_identical_to_plain_generate_on_the_device(float32_model, gpu_record):
    architecture, model, inputs = float32_model
    for name, batch in inputs.items():
        plain, _ = _generate(model, batch)
        full, _ = _generate(model, batch, "full")
        assert torch.equal(plain.sequences, full.sequences), f"{architecture} {name}"
        assert all(torch.equal(a, b) for a, b in zip(plain.logits, full.logits)), f"{architecture} {name}"
    gpu_record(f"full bit-identical {architecture}", True)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("policy", POLICIES)
def test_pruning_equals_the_masked_reference_in_float32(float32_model, policy, attn, gpu_record):
    architecture, model, inputs = float32_model
    if refusal := _refusal(model, plphp.load_policy(policy)):
        pytest.skip(f"the architecture refuses this policy (tests/backends/test_architectures.py): {refusal}")
    model.set_attn_implementation({"text_config": attn})
    try:
        for name, batch in inputs.items():
            pruned, report = _generate(model, batch, policy)
            masked, _ = _generate(model, batch, policy, materialize="mask")
            diff = max(float((a - b).abs().max()) for a, b in zip(pruned.logits, masked.logits, strict=True))
            gpu_record(f"float32 {attn} {policy} {architecture} {name} max logit diff", diff)
            assert diff <= FLOAT32_TOLERANCE, f"{architecture} {name}: {diff:.2e}"
            assert torch.equal(pruned.sequences, masked.sequences)
            assert report.kv_bytes_after < report.kv_bytes_before
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})


def _compare_half(pruned, masked, dtype) -> dict[str, float]:
    """Check the stated half-precision tolerance; returns the figures measured."""
    tolerance = HALF_TOLERANCE[dtype]
    steps = len(masked.logits)
    agree = torch.ones(masked.logits[0].shape[0], dtype=torch.bool, device=masked.logits[0].device)
    worst, parted = 0.0, 0
    for step in range(steps):
        a, b = pruned.logits[step].float(), masked.logits[step].float()
        assert torch.isfinite(a).all() and torch.isfinite(b).all(), f"non-finite logits at step {step}"
        scale = float(b.abs().max()) or 1.0
        if agree.any():
            worst = max(worst, float((a - b)[agree].abs().max()) / scale)
        top2 = b.topk(2, dim=-1).values
        near_tie = (top2[:, 0] - top2[:, 1]) <= 2 * tolerance * scale
        same = pruned.sequences[:, -steps + step] == masked.sequences[:, -steps + step]
        parting = agree & ~same
        assert not (parting & ~near_tie).any(), f"tokens parted at step {step} without a near-tie"
        parted += int(parting.sum())
        agree &= same
    assert worst <= tolerance, f"relative logit difference {worst:.2e} > {tolerance:.0e}"
    return {"max_relative_logit_diff": worst, "samples_parted_at_a_near_tie": parted}


def _flash_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return DEVICE.type == "cuda" and is_flash_attn_2_available()


@pytest.mark.parametrize(
    "attn",
    [
        "sdpa",
        pytest.param(
            "flash_attention_2",
            marks=pytest.mark.skipif(not _flash_available(), reason="flash-attn is not installed (or no CUDA)"),
        ),
    ],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("architecture", ["llava_onevision", "qwen2_vl"])
def test_half_precision_generation_under_pruning(architecture, dtype, attn, gpu_record):
    model = build_tiny_model(architecture, seed=0, dtype=dtype, device=DEVICE, attn_implementation=attn)
    for name, batch in _inputs(architecture).items():
        batch = _to(batch, DEVICE, dtype)
        pruned, report = _generate(model, batch, "plphp")
        masked, _ = _generate(model, batch, "plphp", materialize="mask")
        figures = _compare_half(pruned, masked, dtype)
        gpu_record(f"{str(dtype)[6:]} {attn} {architecture} {name}", figures)
        assert report.vision_kv_reduction > 0


@pytest.mark.skipif(DEVICE.type != "cuda" or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_device_map_auto_over_two_devices(tmp_path, gpu_record):
    from transformers import AutoModelForImageTextToText

    from plphp.models import save_tiny

    path = save_tiny("llava_onevision", tmp_path / "tiny", seed=0)
    size = sum(file.stat().st_size for file in path.glob("*.safetensors"))
    # Room for about half the weights on the first device: accelerate puts the rest on the second.
    model = AutoModelForImageTextToText.from_pretrained(
        path, device_map="auto", max_memory={0: int(size * 0.6), 1: "20GiB"}, dtype=torch.float32
    ).eval()
    devices = {param.device for param in model.parameters()}
    assert len(devices) >= 2, f"device_map='auto' kept everything on {devices}"
    inputs = _to(_inputs("llava_onevision")["batch3"], model.device)
    with torch.inference_mode(), plphp.apply(model, "plphp") as session:
        pruned = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        cache = model(**inputs, use_cache=True).past_key_values
    layer_devices = {layer.keys.device for layer in cache.layers if getattr(layer, "keys", None) is not None}
    assert len(layer_devices) >= 2, "each layer's cache stays on its layer's device"
    with torch.inference_mode(), plphp.apply(model, "plphp", materialize="mask"):
        masked = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    assert torch.equal(pruned, masked)
    assert session.report.kv_bytes_after < session.report.kv_bytes_before
    gpu_record("device_map auto devices", sorted(str(device) for device in layer_devices))


def test_bench_on_the_device_with_a_memory_budget(tmp_path, gpu_record):
    out = tmp_path / "budget.json"
    args = [sys.executable, "-m", "plphp", "bench", "--model", "tiny-llava-onevision", "--device", str(DEVICE)]
    args += ["--vision-tokens", "400", "--text-tokens", "16", "--new-tokens", "4", "--rounds", "1"]
    args += ["--memory-budget", "2GiB" if DEVICE.type == "cuda" else "64GiB", "--max-batch", "8"]
    args += ["--policy", "plphp", "--json", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads(out.read_text())
    method = " ".join(payload["notes"])
    expected = "max_memory_allocated" if DEVICE.type == "cuda" else "peak RSS"
    assert expected in method, method
    rows = {row["label"]: row for row in payload["rows"]}
    assert rows["unpruned"]["max_batch"] >= 1 and rows["plphp"]["max_batch"] >= rows["unpruned"]["max_batch"]
    assert rows["plphp"]["kv_bytes_per_sequence"] < rows["unpruned"]["kv_bytes_per_sequence"]
    gpu_record("bench memory budget rows", {label: row["max_batch"] for label, row in rows.items()})
    Path(tmp_path / "budget.stdout").write_text(done.stdout)
