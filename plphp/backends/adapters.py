"""Model adapters: all the architecture knowledge of the transformers backend.

An adapter says, for one family of models, where the language model's configuration is, which
token ids are vision tokens, how vision tokens group into images, and which layers may be pruned.
This module holds the base class; the built-in adapters live in `plphp.backends.architectures`, one
module per family, registered through the `plphp_adapters` hook like any plugin's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from plphp.backends.frames import split_segments
from plphp.backends.layout import TokenLayout
from plphp.backends.prefill import gather_slots
from plphp.errors import UnsupportedModelError

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
    #: Sub-config of the vision tower, whose attention the input stage reads (`tower_statistics`).
    vision_config_key: ClassVar[str] = "vision_config"

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
        """The decoder layers that `stage` ("decode", "prefill" or "input") must leave whole, each with why.

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

    # -- the input stage ---------------------------------------------------------------------------
    def language_model(self) -> torch.nn.Module:
        """The decoder stack the input stage feeds: its forward takes `inputs_embeds`,
        `attention_mask` and `position_ids` (the projected vision features are already in place)."""
        return self.model.get_decoder()

    def tower_attention_modules(self) -> list[torch.nn.Module]:
        """The vision tower's attention modules in layer order (empty: the model has no tower)."""
        return []

    def tower_has_cls(self) -> bool:
        """Whether the tower prepends a [CLS] token (CLIP), whose attention then scores the patches."""
        return False

    def vision_tower(self) -> torch.nn.Module | None:
        """The vision tower module (`generate()` runs it before the first forward, so the input stage
        reads what it needs from the tower's own call: `tower_inputs`)."""
        return None

    def tower_inputs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The model inputs a tower call reveals, under the model's input names (Qwen: `image_grid_thw`)."""
        return {}

    def vision_projector(self) -> torch.nn.Module | None:
        """The module whose output holds each tower patch's projected feature, `[n, T', D]` (kept by the
        input stage as `projected_patches` where `tower_statistics` matches tokens to patches)."""
        return None

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Map one tower layer's per-call statistics (`plphp.backends.tower.TowerCapture`) to vision tokens.

        Args:
            calls: the statistic of each attention call of the layer, `[b, n]`, in call order.
            inputs: the model's keyword inputs of the prefill (`pixel_values`, `image_sizes`, ...).

        Returns:
            Per image of the batch (sample 0's first, prompt order) `[N_i]`: one value per vision
            token, NaN at tokens that are no patch (row newlines).
        """
        raise UnsupportedModelError(
            f"{type(self.model).__name__}: the adapter {self.name!r} does not map vision-tower statistics to vision "
            "tokens; use an input-stage collector that reads the features (diversity, features)"
        )

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
