"""The run config of `plphp run`: model, inputs, generation and policy, validated by pydantic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plphp.errors import ConfigError
from plphp.policy import read_config_file
from plphp.validation import validate


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    path: str = Field(description="a Hugging Face hub id or a local directory written by save_pretrained")
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
    images = []
    for index, image in enumerate(config.inputs.images):
        resolved = Path(image) if Path(image).is_absolute() else base / image
        if not resolved.is_file():
            raise ConfigError(f"inputs.images.{index}: file {image!r} not found (looked in {str(base)!r})")
        images.append(str(resolved))
    config.inputs.images = images
    return config, base
