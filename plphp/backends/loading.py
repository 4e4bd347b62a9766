"""Loading real models and generating with a policy, for `plphp run` and scripts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from plphp.backends.inputs import chat_inputs
from plphp.errors import ConfigError
from plphp.policy import Policy, is_kind
from plphp.report import PruningReport
from plphp.runconfig import ModelSection, RunConfig, image_problem


def resolve_device(name: str) -> torch.device:
    """'auto' is cuda when present, else cpu; anything else must be a valid torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"model.device: {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {name!r} was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return device


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def model_location(path: str) -> str:
    """`path` as given to `from_pretrained`, refused when it names a local directory that is not there.

    A path that exists, is absolute, starts with `.` or `~`, or has more than one `/` is a local
    directory; otherwise it must look like a hub id (`name` or `namespace/name`).
    """
    expanded = os.path.expanduser(path)
    where = Path(expanded)
    if is_kind(where, "is_dir"):
        return expanded
    if is_kind(where, "exists"):
        raise ConfigError(f"model.path: {path!r} is a file; give a directory written by save_pretrained or a hub id")
    if os.path.isabs(expanded) or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path:
        relative = "" if os.path.isabs(expanded) else f" (relative to the working directory {os.getcwd()!r})"
        raise ConfigError(f"model.path: directory {path!r} does not exist{relative}")
    if not _HUB_ID.match(path):
        raise ConfigError(
            f"model.path: {path!r} is neither an existing directory nor a hub id ('name' or 'namespace/name')"
        )
    return path


def load_model(section: ModelSection) -> tuple[Any, Any]:
    """Load a model and its processor from a hub id or a local directory.

    A directory written by `plphp.models.save_tiny` loads once `plphp.models.register_processors()`
    has been called (the callers that accept such directories call it; this module does not
    import `plphp.models`).

    Returns:
        `(model, processor)`, the model in eval mode on the configured device.
    """
    device = resolve_device(section.device)
    dtype = section.dtype if section.dtype == "auto" else getattr(torch, section.dtype)
    path = model_location(section.path)
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype, attn_implementation=section.attn_implementation
        )
    except (OSError, ValueError, KeyError) as exc:  # missing files, an unknown or broken config
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"model.path: cannot load {section.path!r}: {first}") from None
    return model.to(device).eval(), processor


def _open_image(path: str, index: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on broken files
        problem = image_problem(Path(path)) or " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"inputs.images.{index}: {path!r} cannot be read as an image: {problem}") from None


def generate_with_policy(
    model: Any, processor: Any, config: RunConfig, policy: Policy | None
) -> tuple[str, PruningReport | None]:
    """Generate the answer to `config.inputs` under `policy` (None: unpruned).

    Returns:
        The decoded answer and the session's report (None when unpruned).
    """
    from plphp.backends.session import apply

    images = [_open_image(path, index) for index, path in enumerate(config.inputs.images)]
    inputs = chat_inputs(processor, [(config.inputs.prompt, images)], model.device)
    generation = config.generation
    kwargs = {
        "max_new_tokens": generation.max_new_tokens,
        "do_sample": generation.do_sample,
        "num_beams": generation.num_beams,
    }
    if generation.do_sample:
        kwargs.update(temperature=generation.temperature, top_p=generation.top_p)
    torch.manual_seed(generation.seed)
    report = None
    with torch.inference_mode():
        if policy is None:
            output = model.generate(**inputs, **kwargs)
        else:
            with apply(model, policy) as session:
                output = model.generate(**inputs, **kwargs)
            report = session.report
    answer = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    return answer.strip(), report
