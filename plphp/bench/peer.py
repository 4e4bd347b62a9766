"""plphp against NVIDIA kvpress, measured in one interleaved session (`benchmarks/peers/kvpress.py`).

kvpress pins an older transformers than plphp's, so it runs in a virtualenv of its own
(`make peer-kvpress`) as a long-lived worker process (`plphp/bench/kvpress_worker.py`) that speaks
JSON lines over stdin / stdout. This process builds the same Qwen2 model (one config, one seed; a
fingerprint of the weights must match the worker's) and the same prompt ids. Each round prefills
every pair of presses (`PAIRS`) on both sides, so all caches are live at once, then goes round all
of them one decode step at a time (forwards, then backwards), alternating between the two
processes, each timing its own forward call; so every figure, the unpruned references included,
sees the same load of a shared machine. Rounds alternate the order of the pairs and which side
prefills first; peak memory comes from a warm-up run of each press on each side, alone.

**The same compression.** kvpress removes `compression_ratio` of the whole prompt (keeping
`int(L · (1 − c))` entries per head, its `compute_n_kept`; SnapKV's observation window is always among
them); plphp prunes only vision tokens and keeps every text token. The prompt is almost all vision
tokens, and plphp's retention is set so that both keep the same number of entries per head:
`⌈r · vision⌉ = int(L · (1 − c)) − text` (`matched_retention`). KV bytes are measured from the
cache tensors of both sides after prefill.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from plphp.bench.memory import PeakMemory
from plphp.bench.runs import _Run, run_once
from plphp.bench.synthetic import QWEN2_05B, SyntheticVision
from plphp.bench.workload import PrefillMode, Variant, Workload, build_input_ids
from plphp.errors import ConfigError, PlphpError

WORKER = Path(__file__).with_name("kvpress_worker.py")
#: Where `make peer-kvpress` puts the peer's interpreter (relative to the repository root).
PEER_PYTHON = Path(".peer/kvpress-venv/bin/python")
#: The vision token of the synthetic prompt (text ids are drawn from the upper half of the vocabulary).
VISION_TOKEN_ID = 0


class PeerWorkerError(PlphpError):
    """The peer's worker process failed, exited, or disagrees with this process (one line)."""


@dataclass(frozen=True)
class PeerPair:
    """One row of the comparison: a plphp preset (None: unpruned) and the kvpress press it meets."""

    label: str
    plphp_preset: str | None
    kvpress_press: str  # none, snapkv, adakv (AdaKVPress(SnapKVPress)), knorm


PAIRS = (
    PeerPair("unpruned", None, "none"),
    PeerPair("snapkv", "snapkv", "snapkv"),
    PeerPair("adakv", "adakv", "adakv"),
    PeerPair("knorm", "knorm", "knorm"),
)


@dataclass(frozen=True)
class PeerSetup:
    """What both processes run: the model config (Qwen2Config fields), the workload and the compression."""

    workload: Workload
    compression: float = 0.7
    rounds: int = 3
    prefill: PrefillMode = "synthetic"
    seed: int = 0
    warmup_tokens: int = 4
    model_config: dict[str, Any] = field(default_factory=lambda: {**QWEN2_05B, "vocab_size": 4096})

    def __post_init__(self):
        if not 0.0 < self.compression < 1.0:
            raise ConfigError(f"compression: {self.compression} is not allowed; it must be in (0, 1)")
        if self.rounds < 1:
            raise ConfigError(f"rounds: {self.rounds} is not allowed; it must be >= 1")


def matched_retention(workload: Workload, compression: float) -> tuple[float, int]:
    """plphp's vision retention that keeps as many entries per head as kvpress at `compression`.

    Returns:
        (retention, kept entries per head), kept = `int(L · (1 − compression))` as kvpress counts it.
    """
    length = workload.prompt_length
    kept = max(1, int(length * (1 - compression)))
    vision_kept = kept - (length - workload.vision_tokens)
    if vision_kept < 1:
        raise ConfigError(
            f"compression: {compression} keeps {kept} of {length} entries, fewer than the {length - workload.vision_tokens} "
            "text tokens plphp always keeps; use more vision tokens or a lower compression"
        )
    # Half a token below the count: `kept_count` takes ⌈r · N⌉ of a float32 retention, whose rounding
    # (float32(0.15) · 300 = 45.0000018) would otherwise add a token.
    return (vision_kept - 0.5) / workload.vision_tokens, kept


def build_qwen2(config: dict[str, Any], seed: int = 0) -> Any:
    """`Qwen2ForCausalLM(Qwen2Config(**config))`, random weights from `seed`, float32, sdpa (the worker's twin)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**config, attn_implementation="sdpa")).to(torch.float32).eval()


def weight_fingerprint(model: Any) -> float:
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in model.parameters()))


class KvpressWorker:
    """The peer process: `request(op, **fields)` sends one JSON line and returns the answer.

    Args:
        command: the worker's command line (default: `python plphp/bench/kvpress_worker.py`).
        threads: `OMP_NUM_THREADS` of the worker (the driver's torch threads by default).
    """

    def __init__(self, command: Sequence[str], threads: int | None = None):
        threads = threads or torch.get_num_threads()
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by close())
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        try:
            self.process = subprocess.Popen(
                list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
            )
        except OSError as error:
            raise PeerWorkerError(
                f"peer worker: cannot start {command[0]!r} ({error}); run `make peer-kvpress`"
            ) from None

    @classmethod
    def start(cls, python: str | os.PathLike = PEER_PYTHON, threads: int | None = None) -> KvpressWorker:
        if not Path(python).exists():
            raise PeerWorkerError(f"peer python: {str(python)!r} does not exist; build it with `make peer-kvpress`")
        return cls([str(python), str(WORKER)], threads)

    def _last_error_line(self) -> str:
        self.stderr.seek(0)
        lines = [line for line in self.stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else "no output on stderr"

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        try:
            self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise PeerWorkerError(f"peer worker exited during {op!r}: {self._last_error_line()}")
        answer = json.loads(line)
        if "error" in answer:
            raise PeerWorkerError(f"peer worker, {op!r}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write('{"op": "quit"}\n')
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()

    def __enter__(self) -> KvpressWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _plphp_variant(pair: PeerPair, retention: float) -> Variant:
    import plphp

    if pair.plphp_preset is None:
        return Variant(pair.label)
    return Variant(pair.label, plphp.load_policy(pair.plphp_preset, allocator={"retention": retention}), retention)


def _press_spec(pair: PeerPair, variant: Variant, compression: float) -> dict[str, Any]:
    """The kvpress press of a pair; SnapKV's window and kernel are those of plphp's collector."""
    spec: dict[str, Any] = {"name": pair.kvpress_press, "compression_ratio": compression}
    collector = getattr(variant.policy, "collector", None)
    if collector is not None and hasattr(collector.params, "window"):
        spec.update(window_size=collector.params.window, kernel_size=collector.params.kernel)
    if variant.policy is not None and hasattr(variant.policy.selector.params, "safeguard"):
        spec["safeguard"] = variant.policy.selector.params.safeguard
    return spec


def _plphp_side(result: Any) -> dict[str, Any]:
    return {
        "kv_bytes": result.kv_bytes,
        "kv_bytes_allocated": result.kv_bytes_allocated,
        "steps_s": result.steps_s,
        "memory_before": result.memory_before,
        "peak_decode": result.peak_decode,
        "vision_kept_fraction": (result.report or {}).get("vision_kept_fraction"),
    }


def _kvpress_run(worker: KvpressWorker, spec: dict, ids: list, setup: PeerSetup, steps: int) -> dict[str, Any]:
    prefill = worker.request("prefill", press=spec, input_ids=ids, mode=setup.prefill, seed=setup.seed)
    timed = [worker.request("step", run=prefill["run"])["step_s"] for _ in range(steps)]
    return {**prefill, **worker.request("finish", run=prefill["run"]), "steps_s": timed}


def run_peer_comparison(
    setup: PeerSetup,
    worker: KvpressWorker,
    pairs: Sequence[PeerPair] = PAIRS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Warm up each pair on both sides alone (their peak memory), then `setup.rounds` rounds in
    which every press of both sides decodes, one step at a time in turn.

    Returns:
        The raw runs (JSON-ready), which `plphp.bench.peer_summary.summarize` reads.
    """
    say = progress or (lambda message: None)
    workload = setup.workload
    retention, kept = matched_retention(workload, setup.compression)
    say("building the model in both processes")
    model = build_qwen2(setup.model_config, setup.seed)
    built = worker.request("build", config=setup.model_config, seed=setup.seed, threads=torch.get_num_threads())
    fingerprint = weight_fingerprint(model)
    if not math.isclose(fingerprint, built["fingerprint"], rel_tol=1e-9):
        raise PeerWorkerError(
            f"weights differ between the processes (fingerprint {fingerprint!r} here, {built['fingerprint']!r} in the "
            "peer): the two transformers versions initialise this config differently"
        )
    raw: dict[str, Any] = {
        "retention": retention,
        "kept_per_head": kept,
        "peer": {k: built[k] for k in ("versions", "torch_num_threads")},
        "weights_fingerprint": fingerprint,
        "pairs": [],
        "warmups": [],
        "rounds": [],
    }
    memory = PeakMemory(model.device)
    raw["memory_method"] = memory.method
    with SyntheticVision(vision_token_id=VISION_TOKEN_ID, architectures=(type(model).__name__,)):
        from plphp.registry import get_registry

        input_ids = build_input_ids(model, get_registry().adapter_for(model), workload, seed=setup.seed)
        ids = input_ids.tolist()
        variants = {pair.label: _plphp_variant(pair, retention) for pair in pairs}
        specs = {pair.label: _press_spec(pair, variants[pair.label], setup.compression) for pair in pairs}
        raw["pairs"] = [
            {
                "label": p.label,
                "plphp": p.plphp_preset,
                "kvpress": specs[p.label],
                "plphp_policy": _describe(variants[p.label]),
            }
            for p in pairs
        ]
        warm_steps = max(1, min(setup.warmup_tokens, workload.new_tokens))
        for pair in pairs:
            say(f"warm-up {pair.label} (each side alone: peak memory)")
            mine = run_once(model, variants[pair.label], input_ids, warm_steps, setup.prefill, memory, -1, setup.seed)
            theirs = _kvpress_run(worker, specs[pair.label], ids, setup, warm_steps)
            raw["warmups"].append({"label": pair.label, "plphp": _plphp_side(mine), "kvpress": theirs})
        for index in range(setup.rounds):
            say(f"round {index + 1}/{setup.rounds}: every press on both sides, decode steps alternating")
            runs = _round(model, worker, pairs, variants, specs, ids, input_ids, setup, index)
            raw["rounds"].extend(runs)
    return raw


def _round(model, worker, pairs, variants, specs, ids, input_ids, setup, index) -> list[dict[str, Any]]:
    """Every pair's caches live at once on both sides; single decode steps go round all of them
    (forwards, then backwards at the next step), so the two processes' steps alternate."""
    order = list(pairs) if index % 2 == 0 else list(pairs)[::-1]
    live: list[tuple[str, str, Any]] = []  # (side, label, a plphp `_Run` or the worker's run id)
    first = {}
    for position, pair in enumerate(order):
        sides = ("plphp", "kvpress") if (index + position) % 2 == 0 else ("kvpress", "plphp")
        first[pair.label] = sides[0]
        for side in sides:
            if side == "plphp":
                run = _Run(model, variants[pair.label], input_ids, setup.workload.new_tokens, setup.prefill, setup.seed)
                run.prefill()
            else:
                run = worker.request(
                    "prefill",
                    press=specs[pair.label],
                    input_ids=ids,
                    mode=setup.prefill,
                    seed=setup.seed,
                    measure_memory=False,  # the caches are side by side: peaks come from the warm-ups
                )
                run["steps_s"] = []
            live.append((side, pair.label, run))
    for step in range(setup.workload.new_tokens):
        for side, _, run in live if step % 2 == 0 else live[::-1]:
            if side == "plphp":
                run.step()
            else:
                run["steps_s"].append(worker.request("step", run=run["run"])["step_s"])
    finished: dict[str, dict[str, Any]] = {pair.label: {} for pair in order}
    for side, label, run in live:
        if side == "plphp":
            finished[label]["plphp"] = _plphp_side(run.finish(index))
        else:
            finished[label]["kvpress"] = {**run, **worker.request("finish", run=run["run"])}
    load = os.getloadavg()[0]
    return [
        {"round": index, "label": label, "first": first[label], **sides, "load_avg_1min": load}
        for label, sides in finished.items()
    ]


def _describe(variant: Variant) -> str:
    return "unpruned (DynamicCache, no session)" if variant.policy is None else variant.policy.describe()
