"""The lmms-eval model `plphp`: any supported Hugging Face VLM under a pruning policy, in the real lmms-eval.

    python -m lmms_eval --model plphp --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct,policy=plphp \\
        --tasks mme --batch_size 8 --output_path logs/

lmms-eval (>= 0.6) finds it through the entry point group `lmms_eval.models`
(`plphp.integrations.lmms_eval_manifest`); nothing of lmms-eval is patched. Two faces share one
implementation:

- `PlphpChat`, what `--model plphp` runs: `generate_until` on the task's `doc_to_messages` (several
  turns, several images per turn, videos where the model takes them), batched with left padding;
- `PlphpSimple`, with `--force_simple`: context strings and `doc_to_visual`, and `loglikelihood`,
  which lmms-eval's multiple-choice tasks ask for: the context is prefilled and compressed, and the
  continuation is scored on the pruned cache (`plphp.integrations.likelihood`).

`--model_args` are checked by `plphp.integrations.lmms_args`. Under `accelerate launch` each rank
runs the share lmms-eval gives it, on the GPU of its local rank. Every request's pruning figures
are recorded (`plphp.integrations.lmms_summary`); when lmms-eval calls `clean()`, once every
request has run, rank 0 gathers them and writes `<date>_plphp.json` beside lmms-eval's
`<date>_results.json` (or where `summary=` says). See docs/tutorials/lmms-eval.md.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance, unwrap_generation_output
from lmms_eval.api.model import lmms
from lmms_eval.protocol import ChatMessages
from PIL import Image
from tqdm import tqdm

from plphp.backends.inputs import conversation, conversation_inputs
from plphp.backends.session import apply
from plphp.errors import ConfigError, PlphpError
from plphp.evaluation.dataset import IMAGE_MARKER
from plphp.evaluation.runner import DecodeClock, answer_lengths, kv_bytes_per_sample, stop_token_ids
from plphp.integrations.likelihood import continuation_logprobs
from plphp.integrations.lmms_args import GRID, ModelArgs, harness_args, parse_model_args
from plphp.integrations.lmms_summary import (
    gather_records,
    option_value,
    request_record,
    summary_document,
    summary_path,
    summary_table,
    write_summary,
)
from plphp.registry import get_registry

#: New tokens when a task's `generation_kwargs` set no `max_new_tokens`.
DEFAULT_MAX_NEW_TOKENS = 256
#: lmms-eval's mark on the requests that only even out the ranks' request counts (never scored).
PADDING = "__padding_only__"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".webp")


@dataclass
class _Prompt:
    """One request's chat turns (image / video items in place) and its pictures and videos, in order."""

    turns: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)


def likelihood_response(loss: float, greedy: bool) -> Any:
    """`(loss, greedy)` as lmms-eval's evaluator passes it on to the task unchanged.

    lmms-eval 0.7.3 runs every response through `unwrap_generation_output`, which turns a
    `(float, bool)` tuple into its `str()`, and multiple-choice tasks then fail to unpack it; a
    `GenerationResult` carrying the tuple reaches the task as the tuple. Where lmms-eval keeps
    tuples, the tuple is returned as it is.
    """
    pair = (float(loss), bool(greedy))
    return pair if unwrap_generation_output(pair)[0] == pair else GenerationResult(text=pair)


def _picture(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    with Image.open(value) as image:
        return image.convert("RGB")


def _is_picture(visual: Any) -> bool:
    return isinstance(visual, Image.Image) or (isinstance(visual, str) and visual.lower().endswith(IMAGE_SUFFIXES))


def visual_prompt(context: str, visuals: Sequence[Any]) -> _Prompt:
    """A one-turn prompt from a context string and `doc_to_visual`'s output (pictures, video paths
    or frame lists): the videos first, then the pictures (at `<image>` markers, if any), then the text."""
    images = [_picture(v) for v in visuals if _is_picture(v)]
    videos = [v for v in visuals if not _is_picture(v)]
    turn = conversation(context, len(images), IMAGE_MARKER)[0]
    turn["content"] = [{"type": "video"} for _ in videos] + turn["content"]
    return _Prompt([turn], images, videos)


def messages_prompt(messages: Any, task: str) -> _Prompt:
    """A prompt from `doc_to_messages`' chat (lmms-eval's `ChatMessages` format)."""
    prompt = _Prompt([])
    for message in ChatMessages(messages=messages).messages:
        content: list[dict[str, Any]] = []
        for item in message.content:
            if item.type == "text":
                content.append({"type": "text", "text": item.text})
            elif item.type == "image":
                content.append({"type": "image"})
                prompt.images.append(_picture(item.url))
            elif item.type == "video":
                content.append({"type": "video"})
                prompt.videos.append(item.url)
            else:
                raise PlphpError(f"task {task!r}: {item.type} inputs are not supported by the plphp model")
        prompt.turns.append({"role": message.role, "content": content})
    return prompt


def _load(args: ModelArgs, device: torch.device) -> tuple[Any, Any]:
    """The model (eval mode, on `device` unless `device_map` places it) and its processor."""
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    if args.pretrained == GRID:
        from plphp.models import load_grid_model

        return load_grid_model(
            device=device, dtype=dtype or torch.float32, attn_implementation=args.attn_implementation
        )
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from plphp.backends.loading import model_location
    from plphp.models import register_processors

    register_processors()  # a directory written by plphp.models.save_tiny loads too
    try:
        path = model_location(args.pretrained)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=args.trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path,
            dtype=dtype or "auto",
            attn_implementation=args.attn_implementation,
            device_map=args.device_map,
            trust_remote_code=args.trust_remote_code,
        )
    except ConfigError as exc:
        raise ConfigError(f"model_args pretrained={args.pretrained!r}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:  # missing files, an unknown or broken config
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"model_args pretrained={args.pretrained!r}: cannot load it: {first}") from None
    return (model if args.device_map else model.to(device)).eval(), processor


class PlphpLmms(lmms):
    """What both faces share: loading, batched generation, likelihoods, the per-request figures."""

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        self.settings = parse_model_args(model_args)
        args = self.settings.args
        self.accelerator = Accelerator()
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self._device = self._resolve_device(args.device, self.accelerator.local_process_index)
        self._model, self.processor = _load(args, self._device)
        try:
            get_registry().adapter_for(self._model)
        except PlphpError as exc:
            raise ConfigError(f"model_args pretrained={args.pretrained!r}: {exc}") from None
        if args.device_map:
            self._device = self._model.device
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._stop_ids = stop_token_ids(self._model, self.processor)
        self._records: list[dict[str, Any]] = []
        timezone = option_value(sys.argv, "--timezone") or "Asia/Singapore"  # lmms-eval's default
        self._stamp = lmms_utils.get_datetime_str(timezone=timezone)  # as lmms-eval names its results file

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Mapping[str, Any] | None = None) -> Any:
        """`--model_args` plus what lmms-eval adds from its options (`--batch_size`, `--device`);
        `--model_args` win where both set a key."""
        args = lmms_utils.simple_parse_args_string(arg_string)
        return cls(**args, **harness_args(additional_config or {}, args))

    @staticmethod
    def _resolve_device(name: str, local_rank: int) -> torch.device:
        from plphp.backends.loading import resolve_device

        if name == "auto":
            return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        try:
            return resolve_device(name)
        except ConfigError as exc:
            raise ConfigError(f"model_args device={name!r}: {exc}") from None

    @property
    def model(self) -> Any:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.settings.args.batch_size

    @property
    def records(self) -> list[dict[str, Any]]:
        """This rank's per-request figures so far (`plphp.integrations.lmms_summary.request_record`)."""
        return list(self._records)

    # -- prompts ------------------------------------------------------------------------------------

    def _doc(self, task: str, split: str, doc_id: Any) -> Any:
        return self.task_dict[task][split][doc_id]

    def _inputs(self, prompts: Sequence[_Prompt]) -> Any:
        if any(p.videos for p in prompts) and getattr(self.processor, "video_processor", None) is None:
            raise PlphpError(f"model_args pretrained={self.settings.args.pretrained!r}: its processor takes no videos")
        return conversation_inputs(
            self.processor,
            [p.turns for p in prompts],
            [p.images for p in prompts],
            self._device,
            videos=[p.videos for p in prompts],
        )

    # -- generation ---------------------------------------------------------------------------------

    def _generation(self, gen_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """`generate()` keyword arguments from a task's `generation_kwargs` (greedy unless it samples)."""
        cap = self.settings.args.max_new_tokens
        max_new = int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        sample = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        kwargs = {
            "max_new_tokens": min(max_new, cap) if cap else max_new,
            "do_sample": sample,
            "num_beams": int(gen_kwargs.get("num_beams") or 1),
        }
        if sample:
            kwargs.update(temperature=temperature, top_p=float(gen_kwargs.get("top_p") or 1.0))
        return kwargs

    #: Where a generation request's arguments hold its `generation_kwargs`.
    GENERATION_KWARGS_AT = 1

    def _request_parts(self, request: Instance) -> tuple[_Prompt, Mapping[str, Any]]:
        raise NotImplementedError

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers, in the order of `requests`: batches of `batch_size` requests that share their
        generation settings, each one `generate()` under the policy."""
        answers = [""] * len(requests)
        groups: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if not request.metadata.get(PADDING):  # its answer is never scored: skip the work
                gen_kwargs = request.args[self.GENERATION_KWARGS_AT] or {}
                groups[json.dumps(gen_kwargs, sort_keys=True, default=str)].append(index)
        progress = tqdm(total=sum(map(len, groups.values())), disable=self.rank != 0, desc="plphp")
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                for index, answer in zip(batch, self._generate([requests[i] for i in batch])):
                    answers[index] = answer
                progress.update(len(batch))
        progress.close()
        return answers

    def _generate(self, batch: Sequence[Instance]) -> list[str]:
        parts = [self._request_parts(request) for request in batch]
        gen_kwargs = parts[0][1]
        inputs = self._inputs([prompt for prompt, _ in parts])
        clock = DecodeClock(self._model)
        try:
            with torch.inference_mode(), apply(self._model, self.settings.policy) as session:
                output = self._model.generate(**inputs, **self._generation(gen_kwargs))
        finally:
            clock.close()
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        lengths = answer_lengths(new_tokens, self._stop_ids)
        before, after, kept = kv_bytes_per_sample(session.report, inputs["attention_mask"].bool())
        until = gen_kwargs.get("until") or []
        answers = []
        for b, request in enumerate(batch):
            text = self.tokenizer.decode(new_tokens[b, : lengths[b]], skip_special_tokens=True).strip()
            for stop in [until] if isinstance(until, str) else until:
                if stop:
                    text = text.split(stop)[0]
            answers.append(text)
            self._records.append(
                request_record(
                    request.task_name,
                    request.doc_id,
                    "generate_until",
                    before[b],
                    after[b],
                    kept[b],
                    clock.seconds_per_token,
                    lengths[b],
                )
            )
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise PlphpError("generate_until_multi_round: multi-round tasks are not supported by the plphp model yet")

    # -- likelihoods --------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        """`(loss, whether greedy decoding gives the continuation)` per request (as
        `likelihood_response` hands it to lmms-eval): the context is prefilled and compressed under
        the policy, and the continuation scored on that cache.

        The loss is the mean negative log-likelihood of the continuation's tokens: what lmms-eval's
        own models return, and what its multiple-choice scoring expects (it takes the option of the
        smallest value).
        """
        results: list[Any] = [likelihood_response(0.0, False)] * len(requests)
        indices = [i for i, request in enumerate(requests) if not request.metadata.get(PADDING)]
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            prompts, continuations = [], []
            for index in batch:
                prompt, continuation = self._likelihood_parts(requests[index])
                tokens = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
                if not tokens:
                    raise PlphpError(f"task {requests[index].task_name!r}: an empty continuation cannot be scored")
                prompts.append(prompt)
                continuations.append(tokens)
            inputs = self._inputs(prompts)
            scores = continuation_logprobs(
                self._model, inputs, continuations, self.settings.policy, pad_token_id=self.tokenizer.pad_token_id or 0
            )
            before, after, kept = kv_bytes_per_sample(scores.report, inputs["attention_mask"].bool())
            for b, index in enumerate(batch):
                loss = -scores.logprobs[b] / len(continuations[b])
                results[index] = likelihood_response(loss, scores.greedy[b])
                request = requests[index]
                self._records.append(
                    request_record(
                        request.task_name, request.doc_id, "loglikelihood", before[b], after[b], kept[b], None, None
                    )
                )
        return results

    def _likelihood_parts(self, request: Instance) -> tuple[_Prompt, str]:
        """A likelihood request's prompt and continuation: `(context, continuation, doc_to_visual,
        doc_id, task, split)`, where the continuation may be `doc_to_target`, or `(context,
        continuation)` without pictures (the unconditional requests of `acc_mutual_info`)."""
        if len(request.args) == 2:
            context, continuation = request.args
            return visual_prompt(context, []), continuation
        context, continuation, doc_to_visual, doc_id, task, split = request.args[:6]
        doc = self._doc(task, split, doc_id)
        if callable(continuation):
            continuation = continuation(doc)
        visuals = doc_to_visual(doc) if doc_to_visual is not None else []
        return visual_prompt(context, visuals or []), str(continuation)

    # -- the summary --------------------------------------------------------------------------------

    def _results_dir(self) -> Path | None:
        """The folder lmms-eval writes this run's results to: `--output_path` / the sanitised model name."""
        output = option_value(sys.argv, "--output_path")
        if output is None:
            return None
        from lmms_eval.loggers.evaluation_tracker import GeneralConfigTracker

        model_name = GeneralConfigTracker._get_model_name(option_value(sys.argv, "--model_args") or "")
        return Path(output) / lmms_utils.sanitize_model_name(model_name)

    def summary(self) -> dict[str, Any]:
        """Every rank's requests gathered (a collective call: every rank makes it), and per-task figures."""
        import torch.distributed as dist

        world = self.world_size if dist.is_available() and dist.is_initialized() else 1
        records = gather_records(self._records, world)
        policy = self.settings.policy
        run = {
            "model": self.settings.args.pretrained,
            "policy": policy.name,
            "policy_description": policy.describe(),
            "overrides": self.settings.overrides,
            "processes": world,
            "batch_size": self.batch_size,
        }
        return summary_document(records, run)

    def write_summary(self) -> Path | None:
        """Gather the summary onto rank 0, print its table there and write it (see the module's note)."""
        document = self.summary()
        if self.rank != 0:
            return None
        from rich.console import Console

        console = Console(stderr=True)
        console.print(summary_table(document["tasks"], f"plphp: {document['policy']} on {document['model']}"))
        path = summary_path(self.settings.args.summary, self._results_dir(), self._stamp)
        if path is not None:
            write_summary(path, document)
            console.print(f"plphp summary: {path}")
        return path

    def clean(self) -> None:
        """lmms-eval calls this on every rank once every request has run: write the summary, then let
        lmms-eval free the model."""
        self.write_summary()
        super().clean()


class PlphpChat(PlphpLmms):
    """`--model plphp`: requests `(context, doc_to_messages, generation_kwargs, doc_id, task, split)`."""

    is_simple = False
    GENERATION_KWARGS_AT = 2

    def _request_parts(self, request: Instance) -> tuple[_Prompt, Mapping[str, Any]]:
        _, doc_to_messages, gen_kwargs, doc_id, task, split = request.args[:6]
        messages = doc_to_messages(self._doc(task, split, doc_id)) if callable(doc_to_messages) else doc_to_messages
        return messages_prompt(messages, task), gen_kwargs or {}


class PlphpSimple(PlphpLmms):
    """`--model plphp --force_simple`: requests `(context, generation_kwargs, doc_to_visual, doc_id,
    task, split)`; multiple-choice tasks' likelihoods."""

    is_simple = True

    def _request_parts(self, request: Instance) -> tuple[_Prompt, Mapping[str, Any]]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args[:6]
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else []
        return visual_prompt(context, visuals or []), gen_kwargs or {}
