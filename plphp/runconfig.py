"""The run config of `plphp run`: model, inputs, generation and policy, validated by pydantic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from plphp.errors import ConfigError
from plphp.policy import is_kind, read_config_file
from plphp.validation import StrictNumbers, validate


class _Section(StrictNumbers):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    path: str = Field(min_length=1, description="a Hugging Face hub id or a local directory written by save_pretrained")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"


class InputsSection(_Section):
    prompt: str = Field(min_length=1, description="the question; one image placeholder per image is added")
    images: list[str] = Field(default_factory=list, description="image files, relative to the config file")


class GenerationSection(_Section):
    max_new_tokens: int = Field(64, ge=1, le=100_000)
    do_sample: bool = False
    num_beams: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0)


class RunConfig(_Section):
    """A whole `plphp run` config file."""

    model: ModelSection
    inputs: InputsSection
    generation: GenerationSection = Field(default_factory=GenerationSection)
    policy: dict[str, Any] = Field(default_factory=lambda: {"preset": "plphp"})

    @field_validator("policy", mode="before")
    @classmethod
    def _preset_name(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value


def load_run_config(path: str | os.PathLike) -> tuple[RunConfig, Path]:
    """Read and validate a run config; image paths are resolved against the file's folder.

    Returns:
        The config and the folder it was read from.
    """
    path = Path(path)
    config = validate(RunConfig, read_config_file(path), "")
    base = path.resolve().parent
    config.inputs.images = [_image_file(image, index, base) for index, image in enumerate(config.inputs.images)]
    return config, base


def image_problem(path: Path) -> str | None:
    """Why Pillow cannot read the image file `path`, or None when it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except UnidentifiedImageError:
        return "not an image format Pillow can read"
    except Exception as exc:  # truncated or corrupt files raise OSError, SyntaxError, ValueError, ...
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def image_file_problem(image: str, base: Path) -> tuple[Path, str | None]:
    """`image` resolved against `base`, and why it is not a readable image file (None when it is).

    The one check of an image path, for run configs and datasets alike; the caller names the field.
    """
    resolved = Path(image) if Path(image).is_absolute() else base / image
    if not image.strip():
        return resolved, "the path is empty"
    if is_kind(resolved, "is_dir"):
        return resolved, f"{image!r} is a directory, not an image file (looked in {str(base)!r})"
    if not is_kind(resolved, "is_file"):
        return resolved, f"file {image!r} not found (looked in {str(base)!r})"
    problem = image_problem(resolved)
    return resolved, (f"{image!r} cannot be read as an image: {problem}" if problem else None)


def _image_file(image: str, index: int, base: Path) -> str:
    """The resolved path of `inputs.images[index]`, refused unless it is an image file."""
    resolved, problem = image_file_problem(image, base)
    if problem == "the path is empty":
        problem += "; give an image file, relative to the config file"
    if problem:
        raise ConfigError(f"inputs.images.{index}: {problem}")
    return str(resolved)
