"""Run several policies on the same batches and record, per item, quality, KV bytes, time and recall.

Per batch (left-padded), every policy generates in turn (A B C, then the next batch: interleaved,
so that load on a shared machine hits all policies alike), then one unpruned `generate()` measures
the attention recall of every policy's keep-sets at once (`recall_for`). Each finished
(policy, item) result is appended to `items.jsonl` and flushed before the next batch starts, so a
crashed or interrupted run loses at most the batch in flight; a rerun skips what is there. Under
`torchrun` / `accelerate launch` the processes share the batches (`plphp.evaluation.parallel`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plphp.backends.inputs import chat_inputs
from plphp.backends.recall import recall_for
from plphp.backends.session import apply
from plphp.errors import ConfigError
from plphp.evaluation.dataset import IMAGE_MARKER, DatasetError, EvalItem
from plphp.evaluation.parallel import RECORDS, Shard, read_all_records, read_records
from plphp.policy import Policy
from plphp.registry import get_registry
from plphp.report import PruningReport
from plphp.tasks.scoring import exact_match, token_accuracy

SETTINGS = "settings.json"
__all__ = ["RECORDS", "SETTINGS", "EvalSettings", "read_records", "run_eval"]


@dataclass
class EvalSettings:
    """How items run.

    Attributes:
        batch_size: items per `generate()` call.
        max_new_tokens: upper bound of new tokens; each batch generates as many as its longest
            reference answer needs (in the model's tokens) plus one, up to this bound.
        recall: measure attention recall (one more unpruned `generate()` per batch).
    """

    batch_size: int = 4
    max_new_tokens: int = 32
    recall: bool = True


def _drop_partial_line(path: Path) -> None:
    """Cut a last line left without its newline by a crash, so that appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def check_settings(out_dir: Path, settings: Mapping[str, Any], write: bool = True) -> None:
    """Refuse to resume an output folder written with another model, dataset or generation setting.

    `write`: record `settings` in the folder (the one process that writes, among several).
    """
    path = out_dir / SETTINGS
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(key for key in settings if key in previous and previous[key] != settings[key])
        if changed:
            details = "; ".join(f"{key}: {previous[key]!r} -> {settings[key]!r}" for key in changed)
            raise ConfigError(
                f"out: {str(out_dir)!r} holds results of another run ({details}); "
                "use another --out folder or --overwrite"
            )
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(settings), indent=2))


def build_inputs(processor: Any, items: Sequence[EvalItem], device: Any) -> Any:
    """A left-padded batch of chat prompts for `items` (pictures decoded here)."""
    samples = [(item.question, item.images()) for item in items]
    try:
        return chat_inputs(processor, samples, device, image_marker=IMAGE_MARKER)
    except (ValueError, TypeError, RuntimeError, IndexError) as exc:
        rows = ", ".join(f"{item.where} (id {item.id!r})" for item in items)
        raise DatasetError(f"cannot build the prompts of {rows}: {exc}") from None


class DecodeClock:
    """Times the forward passes of one `generate()`: the first is prefill, the rest decoding."""

    def __init__(self, model: Any):
        self.calls = 0
        self.prefill_end = 0.0
        self.end = 0.0
        self._hooks = [model.register_forward_hook(self._after)]

    def _after(self, *_: Any) -> None:
        self.calls += 1
        now = time.perf_counter()
        if self.calls == 1:
            self.prefill_end = now
        self.end = now

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()

    @property
    def seconds_per_token(self) -> float | None:
        steps = self.calls - 1
        return (self.end - self.prefill_end) / steps if steps > 0 else None


def answer_lengths(new_tokens: torch.Tensor, stop_ids: set[int]) -> list[int]:
    """New tokens per sample up to and including the first stop token."""
    lengths = []
    for row in new_tokens.tolist():
        length = len(row)
        for index, token in enumerate(row):
            if token in stop_ids:
                length = index + 1
                break
        lengths.append(length)
    return lengths


def kv_bytes_per_sample(
    report: PruningReport | None, key_valid: torch.Tensor
) -> tuple[list[int], list[int], list[float]]:
    """Per sample: prompt KV bytes before and after pruning (its own entries, no padding), and the
    share of its vision KV entries kept (`PruningReport.kv_bytes_per_sample`)."""
    batch = key_valid.shape[0]
    if report is None:
        return [0] * batch, [0] * batch, [1.0] * batch
    return report.kv_bytes_per_sample(key_valid.sum(-1).tolist())


def stop_token_ids(model: Any, processor: Any) -> set[int]:
    ids: set[int] = set()
    for value in (model.generation_config.eos_token_id, model.generation_config.pad_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(value)
    tokenizer = getattr(processor, "tokenizer", processor)
    for value in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if value is not None:
            ids.add(value)
    return ids


def run_eval(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    policies: Mapping[str, Policy],
    out_dir: str | os.PathLike,
    settings: EvalSettings | None = None,
    on_batch: Callable[[int], None] | None = None,
    shard: Shard | None = None,
) -> list[dict[str, Any]]:
    """Evaluate `policies` on `items`, appending results to `out_dir/items.jsonl`.

    Args:
        model: a supported vision-language model.
        processor: its processor (with a chat template).
        items: the dataset.
        policies: name -> policy, in the order they run within each batch.
        out_dir: the output folder; results already there are kept and not recomputed.
        settings: batch size, token budget, recall.
        on_batch: called with the number of items finished after each batch (progress).
        shard: this process among several (`Shard.from_environment()`): it runs its share of the
            batches and appends to its own records file. Every process must call `run_eval` alike.

    Returns:
        All records of the folder for these items and policies (old and new), one per (policy, item);
        under several processes, those in the folder when this process is done.
    """
    settings = settings or EvalSettings()
    shard = shard or Shard()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / shard.records_name
    _drop_partial_line(records_path)
    done = {(r["policy"], r["id"]) for r in read_all_records(out_dir)}
    shard.barrier()  # every process has read the same records before any writes
    pending = [item for item in items if any((name, item.id) not in done for name in policies)]
    batches = [pending[start : start + settings.batch_size] for start in range(0, len(pending), settings.batch_size)]
    tokenizer = getattr(processor, "tokenizer", processor)
    stop_ids = stop_token_ids(model, processor)
    adapter = get_registry().adapter_for(model)
    for batch in shard.mine(batches):
        inputs = build_inputs(processor, batch, model.device)
        needed = max(len(tokenizer(item.answer, add_special_tokens=False)["input_ids"]) for item in batch) + 1
        generation = {"max_new_tokens": min(needed, settings.max_new_tokens), "do_sample": False, "num_beams": 1}
        names = [name for name in policies if any((name, item.id) not in done for item in batch)]
        records: dict[str, list[dict[str, Any]]] = {}
        reports: dict[str, PruningReport | None] = {}
        for name in names:
            records[name], reports[name] = _run_policy(
                model, name, policies[name], batch, inputs, generation, tokenizer, stop_ids
            )
        if settings.recall:
            _add_recall(model, adapter, inputs, generation, reports, records, stop_ids)
        with records_path.open("a") as handle:
            for name in names:
                for row in records[name]:
                    if (name, row["id"]) not in done:
                        handle.write(json.dumps(row) + "\n")
                        done.add((name, row["id"]))
            handle.flush()
            os.fsync(handle.fileno())
        if on_batch is not None:
            on_batch(len(batch))
    wanted = {item.id for item in items}
    return [r for r in read_all_records(out_dir) if r["id"] in wanted and r["policy"] in policies]


def _run_policy(
    model: Any,
    name: str,
    policy: Policy,
    batch: Sequence[EvalItem],
    inputs: Any,
    generation: Mapping[str, Any],
    tokenizer: Any,
    stop_ids: set[int],
) -> tuple[list[dict[str, Any]], PruningReport | None]:
    """Generate one batch under one policy: a record per item (recall filled in later) and the report."""
    clock = DecodeClock(model)
    try:
        with torch.inference_mode(), apply(model, policy) as session:
            output = model.generate(**inputs, **generation)
    finally:
        clock.close()
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    lengths = answer_lengths(new_tokens, stop_ids)
    before, after, kept_vision = kv_bytes_per_sample(session.report, inputs["attention_mask"].bool())
    rows = []
    for b, item in enumerate(batch):
        prediction = tokenizer.decode(new_tokens[b, : lengths[b]], skip_special_tokens=True).strip()
        rows.append(
            {
                "policy": name,
                "id": item.id,
                "kind": item.kind,
                "num_images": item.num_images,
                "question": item.question,
                "answer": item.answer,
                "prediction": prediction,
                "exact_match": exact_match(prediction, item.answer),
                "token_accuracy": token_accuracy(prediction, item.answer),
                "new_tokens": lengths[b],
                "kv_bytes_before": before[b],
                "kv_bytes_after": after[b],
                "vision_kv_kept": kept_vision[b],
                "decode_seconds_per_token": clock.seconds_per_token,
                "batch_size": len(batch),
                "recall": None,
                "recall_per_layer": None,
            }
        )
    return rows, session.report


def _add_recall(
    model: Any,
    adapter: Any,
    inputs: Any,
    generation: Mapping[str, Any],
    reports: Mapping[str, PruningReport | None],
    records: Mapping[str, list[dict[str, Any]]],
    stop_ids: set[int],
) -> None:
    """One unpruned `generate()` measuring every policy's recall; fills the records in place."""
    results, output = recall_for(model, inputs, reports, **generation)
    lengths = answer_lengths(output[:, inputs["input_ids"].shape[1] :], stop_ids)
    for name, rows in records.items():
        result = results.get(name)
        for b, row in enumerate(rows):
            if result is None:  # nothing pruned: every step keeps all of its mass
                row["recall"], row["recall_per_layer"] = 1.0, [1.0] * adapter.num_layers
                continue
            steps = result.per_step.shape[0]
            # Step t feeds answer token t and produces token t + 1: it counts while the answer runs.
            valid = torch.zeros(steps, len(rows), dtype=torch.bool)
            valid[: max(lengths[b] - 1, 0), b] = True
            per_layer = result.per_sample_layer(valid)[b]
            if bool(per_layer.isnan().any()):
                continue  # the answer ended at its first token: no decoding step to measure
            row["recall"] = float(per_layer.mean())
            row["recall_per_layer"] = [round(float(v), 6) for v in per_layer]
