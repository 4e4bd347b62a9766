"""Model adapters: all the architecture knowledge of the transformers backend.

An adapter says, for one family of models, where the language model's configuration is, which
token ids are vision tokens, how vision tokens group into images, and which layers may be pruned.
Adapters are plugins: this module registers the built-in ones through the `plphp_adapters` hook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from plphp.backends.frames import fixed_frames, split_segments, video_runs
from plphp.backends.layout import TokenLayout, anyres_layout, unpadded_grid
from plphp.backends.prefill import gather_slots
from plphp.errors import UnsupportedModelError
from plphp.hookspecs import hookimpl

_LAYER_TYPE_REASONS = {
    "sliding_attention": "uses sliding-window attention (its cache holds only the last window of keys)",
    "linear_attention": "uses linear attention and keeps no KV cache",
}


class ModelAdapter:
    """Architecture knowledge for one family of vision-language models.

    Subclasses set `architectures` (model class names) and may override the methods below.
    """

    name: ClassVar[str] = "base"
    #: Class names of the models this adapter handles (matched along the model's MRO).
    architectures: ClassVar[tuple[str, ...]] = ()
    #: Sub-config of the language model, whose attention implementation plphp wraps.
    text_config_key: ClassVar[str] = "text_config"
    #: Config attributes holding vision token ids.
    vision_token_attributes: ClassVar[tuple[str, ...]] = ("image_token_id", "video_token_id")
    #: Those of `vision_token_attributes` that stand for video features.
    video_token_attributes: ClassVar[tuple[str, ...]] = ("video_token_id",)

    def __init__(self, model: Any):
        self.model = model
        self.config = model.config
        self.text_config = model.config.get_text_config(decoder=True)

    @classmethod
    def handles(cls, model: Any) -> bool:
        """Whether `model`'s class (or a base class) is one of `architectures`."""
        return any(klass.__name__ in cls.architectures for klass in type(model).__mro__)

    # -- shapes of the language model ----------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Decoder layers of the language model."""
        return self.text_config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        """Query heads per layer."""
        return self.text_config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        """Key/value heads per layer (fewer than query heads under GQA)."""
        return getattr(self.text_config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        """Size of one head's key vector."""
        return getattr(self.text_config, "head_dim", None) or self.text_config.hidden_size // self.num_heads

    def unprunable_layers(self, stage: str) -> dict[int, str]:
        """The decoder layers that `stage` ("decode" or "prefill") must leave whole, each with why.

        The decode stage prunes a layer's cache; the prefill stage drops tokens from the hidden
        states of every layer from `start_layer` on, so it cannot start before a layer listed here.
        The base class lists every layer that is not full attention (`text_config.layer_types`): a
        sliding-window layer's cache holds only the last window of keys, so a keep-set over prompt
        positions does not map onto it, and a linear-attention layer keeps no KV cache at all.
        An adapter adds its architecture's own (DeepStack layers, bidirectional prefill masks).

        Returns:
            Layer index -> the reason, a phrase that completes "layer i ...".
        """
        layer_types = getattr(self.text_config, "layer_types", None) or ["full_attention"] * self.num_layers
        return {
            idx: _LAYER_TYPE_REASONS.get(kind, f"is a {kind!r} layer, not full attention")
            for idx, kind in enumerate(layer_types)
            if kind != "full_attention"
        }

    def prunable_layers(self) -> list[bool]:
        """Per decoder layer, whether the decode stage may prune its cache (`unprunable_layers`)."""
        kept = self.unprunable_layers("decode")
        return [idx not in kept for idx in range(self.num_layers)]

    def decoder_layers(self) -> list[torch.nn.Module]:
        """The language model's decoder layers, in order."""
        return list(self.model.get_decoder().layers)

    def final_norm(self) -> torch.nn.Module:
        """The language model's last normalisation, the one its LM head reads after the last layer.

        Collectors that compare tokens by their hidden states (`reads_hidden_states`, DART) get
        each layer's output through it, as DART's code compares them.
        """
        norm = getattr(self.model.get_decoder(), "norm", None)
        if not isinstance(norm, torch.nn.Module):
            raise UnsupportedModelError(
                f"adapter {self.name!r}: {type(self.model).__name__}'s language model has no final norm "
                "(`norm`), which collectors that read hidden states need; override ModelAdapter.final_norm"
            )
        return norm

    def gather_positions(self, kwargs: dict[str, Any], slots: torch.Tensor) -> dict[str, Any]:
        """A decoder layer's keyword inputs for a shrunk sequence (prefill stage).

        Args:
            kwargs: the keyword arguments the model passes to every decoder layer.
            slots: `[B, S]` the prompt position each slot of the shrunk sequence holds.

        Returns:
            The per-position inputs (RoPE cos / sin, M-RoPE included, and position ids) gathered,
            so every kept token keeps its original position; they replace those in `kwargs`.
        """
        out = {}
        embeddings = kwargs.get("position_embeddings")
        if embeddings is not None:
            out["position_embeddings"] = tuple(gather_slots(t, slots, -2) for t in embeddings)
        position_ids = kwargs.get("position_ids")
        if isinstance(position_ids, torch.Tensor):
            ids = position_ids if position_ids.dim() > 1 else position_ids[None]
            out["position_ids"] = gather_slots(ids, slots, -1)
        return out

    # -- vision tokens ---------------------------------------------------------------------------
    def vision_token_ids(self) -> list[int]:
        """Token ids that stand for image or video features in `input_ids`."""
        ids = []
        for attribute in self.vision_token_attributes:
            value = getattr(self.config, attribute, None)
            if value is not None:
                ids.append(int(value))
        return ids

    def vision_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`[B, L]` bool, True at vision token positions."""
        ids = torch.tensor(self.vision_token_ids(), device=input_ids.device)
        return torch.isin(input_ids, ids)

    def segment_ids(self, input_ids: torch.Tensor, vision_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]` image index of each vision token (-1 elsewhere).

        The default groups each maximal run of vision tokens of one token id into one image; an
        adapter that knows the tokens per image splits runs further (`tokens_per_image`).
        """
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        continues = torch.zeros_like(vision_mask)
        continues[:, 1:] = vision_mask[:, :-1] & (input_ids[:, 1:] == input_ids[:, :-1])
        starts = vision_mask & ~continues  # first token of each run
        per_image = self.tokens_per_image()
        if per_image:
            run_start = torch.where(starts, positions, torch.zeros_like(positions)).cummax(-1).values
            starts = vision_mask & ((positions - run_start) % per_image == 0)
        segments = starts.long().cumsum(-1) - 1
        return torch.where(vision_mask, segments, torch.full_like(segments, -1))

    def tokens_per_image(self) -> int | None:
        """Vision tokens per image when the architecture fixes it, else None."""
        return None

    def prompt_segments(
        self, inputs: Mapping[str, Any], vision_mask: torch.Tensor, unit: str = "image"
    ) -> torch.Tensor:
        """`[B, L]` segment of each vision token (-1 elsewhere): what the session gives the policy.

        Each segment keeps its own share of the budget. The session calls this once per prefill.

        Args:
            inputs: the model's keyword inputs of the prefill call: `input_ids`, and where the
                model takes them `image_grid_thw`, `video_grid_thw`, `pixel_values_videos`, ...
            vision_mask: `[B, L]` the vision positions (padding excluded).
            unit: "image": `segment_ids` (one segment per image and per whole video); "frame":
                every video is split into its frames (`video_frames`), images stay whole.
        """
        input_ids = inputs["input_ids"]
        segments = self.segment_ids(input_ids, vision_mask)
        video = vision_mask & self.video_mask(input_ids)
        if unit == "image" or not bool(video.any()):
            return segments
        frames = self.video_frames(inputs, video)
        return split_segments(segments, torch.where(video, frames, torch.zeros_like(frames)))

    def video_token_ids(self) -> list[int]:
        """Token ids that stand for video features (a subset of `vision_token_ids`)."""
        values = (getattr(self.config, attribute, None) for attribute in self.video_token_attributes)
        return [int(value) for value in values if value is not None]

    def video_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`[B, L]` bool, True at video token positions."""
        return torch.isin(input_ids, torch.tensor(self.video_token_ids(), device=input_ids.device))

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]` long: the frame of its video each video token belongs to (0, 1, ...; any value elsewhere).

        Used by `segments: frame`. The base class knows no frames and refuses.
        """
        raise UnsupportedModelError(
            f"policy.segments: 'frame' needs the video frames of {type(self.model).__name__}, which adapter "
            f"{self.name!r} does not know; use segments 'image' (one segment per whole video)"
        )

    # -- where vision tokens lie on the picture ---------------------------------------------------
    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """The patch each vision token of one image stands for (`plphp.backends.layout`).

        Args:
            inputs: the processor's batch (`image_sizes`, `image_grid_thw`, ... where the model has them).
            image: the image's index over the whole batch (images of sample 0 first, in prompt order).
            num_tokens: the vision tokens the prompt holds for it (a layout that disagrees is not used).

        Returns:
            The layout; the base class, knowing no geometry, returns a strip (`TokenLayout.strip`).
        """
        return TokenLayout.strip(num_tokens)

    def image_layouts(self, inputs: Mapping[str, Any]) -> list[list[tuple[list[int], TokenLayout]]]:
        """Per sample, per image: its vision positions in the prompt and its `TokenLayout` (a strip
        wherever `image_layout` fails or disagrees with the prompt's token count)."""
        input_ids = inputs["input_ids"]
        vision = self.vision_mask(input_ids)
        if inputs.get("attention_mask") is not None:
            vision = vision & inputs["attention_mask"].bool()
        segments = self.segment_ids(input_ids, vision)
        out, image = [], 0
        for row in segments:
            sample = []
            for index in range(int(row.max()) + 1 if row.numel() else 0):
                positions = (row == index).nonzero().flatten().tolist()
                try:
                    layout = self.image_layout(inputs, image, len(positions))
                except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
                    layout = TokenLayout.strip(len(positions))
                if layout.num_tokens != len(positions):
                    layout = TokenLayout.strip(len(positions))
                sample.append((positions, layout))
                image += 1
            out.append(sample)
        return out


class LlavaAdapter(ModelAdapter):
    """LLaVA-1.5 style: a fixed number of tokens per image (so adjacent images are told apart)."""

    name = "llava"
    architectures = ("LlavaForConditionalGeneration", "LlavaModel")

    def tokens_per_image(self) -> int | None:
        """Patches, plus the tower's CLS token under `full`, less one token under `default`.

        A CLIP tower prepends a CLS token and a SigLIP tower has none; the `default` strategy
        drops the first feature (CLIP's CLS), `full` keeps them all. This is LlavaProcessor's count.
        """
        vision = self.config.vision_config
        count = (vision.image_size // vision.patch_size) ** 2
        count += 1 if vision.model_type == "clip_vision_model" else 0
        if getattr(self.config, "vision_feature_select_strategy", "default") == "default":
            count -= 1
        return count

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """A square of patches over the picture as the processor crops it; a CLIP tower's CLS token
        (kept under `full`) is no patch, and SigLIP under `default` loses its first patch."""
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        clip = vision.model_type == "clip_vision_model"
        default = getattr(self.config, "vision_feature_select_strategy", "default") == "default"
        layout = TokenLayout.grid(side, side, skip_first=default and not clip)
        if clip and not default:  # the CLS token comes first
            layout = TokenLayout(layout.tiles, (None, *layout.cells))
        return layout if layout.num_tokens == num_tokens else TokenLayout.strip(num_tokens)


class LlavaNextAdapter(ModelAdapter):
    """LLaVA-NeXT and LLaVA-OneVision: any-resolution tiles, so tokens per image vary."""

    name = "llava_next"
    architectures = (
        "LlavaNextForConditionalGeneration",
        "LlavaNextModel",
        "LlavaOnevisionForConditionalGeneration",
        "LlavaOnevisionModel",
    )

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """The base image's square, then the any-resolution tiles' unpadded grid with a newline token
        after each row (`plphp.backends.layout.anyres_layout`), as the model's `pack_image_features`
        lays them out. OneVision tiles only an image that is alone in its sample (`batch_num_images`)
        and downscales a grid beyond `anyres_max_N`."""
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        size = [int(v) for v in inputs["image_sizes"][image]]
        aspect = getattr(self.config, "vision_aspect_ratio", None)  # OneVision only
        tiled = True
        counts = inputs.get("batch_num_images")
        if aspect is not None and counts is not None:
            per_image = [int(n) for n in counts for _ in range(int(n))]
            tiled = per_image[image] == 1
        if not tiled:
            return anyres_layout(side, None, None)
        down, across = get_anyres_image_grid_shape(size, self.config.image_grid_pinpoints, vision.image_size)
        max_tiles = int(aspect.removeprefix("anyres_max_")) if aspect and aspect.startswith("anyres_max_") else None
        rows, cols = unpadded_grid(size, (down * side, across * side), max_tiles, side)
        return anyres_layout(side, (down, across), (rows, cols))

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """OneVision pools each frame's patch grid 2×2 (rounding up) and ends a video with one newline
        token (`get_video_features`), which counts in the last frame."""
        if getattr(self.config, "video_token_id", None) is None:
            return super().video_frames(inputs, video_mask)
        side = math.ceil(self.config.vision_config.image_size // self.config.vision_config.patch_size / 2)
        return fixed_frames(video_mask, side * side, trailer=1)


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL and Qwen2.5-VL: images framed by vision start / end tokens, M-RoPE positions."""

    name = "qwen2_vl"
    architectures = (
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLModel",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen2_5_VLModel",
    )

    def image_layout(self, inputs: Mapping[str, Any], image: int, num_tokens: int) -> TokenLayout:
        """Merged patches in raster order: `image_grid_thw` gives the patches (t, h, w) and each token
        merges `spatial_merge_size²` of them, so an image is an `h/m × w/m` grid over the resized picture.
        A prompt with videos (whose tokens interleave with the images') falls back to a strip."""
        if inputs.get("video_grid_thw") is not None or inputs.get("image_grid_thw") is None:
            return TokenLayout.strip(num_tokens)
        merge = int(getattr(self.config.vision_config, "spatial_merge_size", 1) or 1)
        frames, height, width = (int(v) for v in inputs["image_grid_thw"][image])
        if frames != 1:
            return TokenLayout.strip(num_tokens)
        return TokenLayout.grid(height // merge, width // merge)

    def video_frames(self, inputs: Mapping[str, Any], video_mask: torch.Tensor) -> torch.Tensor:
        """A video's tokens are its `video_grid_thw` (t, h, w) patches merged `spatial_merge_size²` to
        one, frame after frame; a frame here is one temporal patch (`temporal_patch_size` input frames).

        `generate()` encodes the videos before the prefill call and passes no `video_grid_thw` to it,
        but M-RoPE `position_ids` (`[3 or 4, B, L]`, the temporal row third from the end): each
        frame's tokens share a temporal position, which grows from one frame to the next (Qwen2.5-VL
        spaces frames by `tokens_per_second · second_per_grid_ts` positions, rounded down; frames
        less than one position apart would read as one).
        """
        runs = video_runs(video_mask)
        grid, positions = inputs.get("video_grid_thw"), inputs.get("position_ids")
        frames = torch.zeros(video_mask.shape, dtype=torch.long, device=video_mask.device)
        if grid is None and isinstance(positions, torch.Tensor) and positions.dim() == 3 and positions.shape[0] >= 3:
            temporal = positions[-3].to(video_mask.device).expand(video_mask.shape[0], -1)
            for row, run in runs:
                steps = temporal[row, run]
                frames[row, run[1:]] = (steps[1:] != steps[:-1]).long().cumsum(0)
            return frames
        if grid is None or len(grid) != len(runs):
            raise UnsupportedModelError(
                f"video_grid_thw: segments 'frame' needs one (t, h, w) row per video (or M-RoPE position_ids); the "
                f"prompt holds {len(runs)} videos and video_grid_thw {None if grid is None else len(grid)} rows"
            )
        merge = int(getattr(self.config.vision_config, "spatial_merge_size", 1) or 1)
        for (row, run), (count, height, width) in zip(runs, grid.tolist(), strict=True):
            per_frame = height * width // merge**2
            if count * per_frame != len(run):
                raise UnsupportedModelError(
                    f"video_grid_thw: a row ({count}, {height}, {width}) gives {count * per_frame} tokens, "
                    f"but its video holds {len(run)}"
                )
            frames[row, run] = torch.arange(len(run), device=run.device) // per_frame
        return frames


BUILTIN_ADAPTERS = [LlavaAdapter, LlavaNextAdapter, Qwen2VLAdapter]


@hookimpl
def plphp_adapters():
    return BUILTIN_ADAPTERS
