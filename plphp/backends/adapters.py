"""Model adapters: all the architecture knowledge of the transformers backend.

An adapter says, for one family of models, where the language model's configuration is, which
token ids are vision tokens, how vision tokens group into images, and which layers may be pruned.
Adapters are plugins: this module registers the built-in ones through the `plphp_adapters` hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from plphp.backends.layout import TokenLayout, anyres_layout, unpadded_grid
from plphp.backends.prefill import gather_slots
from plphp.backends.tower import match_patches, newline_layout
from plphp.errors import UnsupportedModelError
from plphp.hookspecs import hookimpl


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

    def prunable_layers(self) -> list[bool]:
        """Per decoder layer, whether its cache may be pruned (sliding-window layers may not)."""
        layer_types = getattr(self.text_config, "layer_types", None) or ["full_attention"] * self.num_layers
        return [kind == "full_attention" for kind in layer_types]

    def decoder_layers(self) -> list[torch.nn.Module]:
        """The language model's decoder layers, in order."""
        return list(self.model.get_decoder().layers)

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

    def tower_attention_modules(self) -> list[torch.nn.Module]:
        """CLIP / SigLIP encoder layers' self-attention."""
        return _encoder_attention(self.model.model.vision_tower)

    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    def tower_has_cls(self) -> bool:
        return self.config.vision_config.model_type == "clip_vision_model"

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """One tower call over every image; the `default` strategy drops the first token, as the features do."""
        return list(_select_features(self.config, torch.cat(calls)))


def _encoder_attention(tower: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention of a CLIP / SigLIP tower's encoder layers (older releases nest a `vision_model`)."""
    encoder = getattr(tower, "vision_model", tower).encoder
    return [layer.self_attn for layer in encoder.layers]


def _select_features(config: Any, statistics: torch.Tensor) -> torch.Tensor:
    """`[n, T]` per tower token -> the tokens the projector sees (`default` drops the first)."""
    default = getattr(config, "vision_feature_select_strategy", "default") == "default"
    return statistics[:, 1:] if default else statistics


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
        if inputs.get("image_sizes") is None and inputs.get("token_features") is not None:
            return self._layout_from_newlines(inputs["token_features"][image], side)
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

    def tower_attention_modules(self) -> list[torch.nn.Module]:
        """CLIP / SigLIP encoder layers' self-attention."""
        return _encoder_attention(self.model.model.vision_tower)

    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    def tower_has_cls(self) -> bool:
        return self.config.vision_config.model_type == "clip_vision_model"

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per tile statistics, split per image as the model splits its tiles, then packed by the model's
        own `pack_image_features` as one-channel features whose newline is NaN (base tile, unpadded and
        possibly downscaled tile grid, a newline after each row)."""
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        sizes = inputs.get("image_sizes")
        if sizes is None:  # generate() encoded the images first and consumed image_sizes
            return self._matched_statistics(calls, inputs)
        counts = inputs.get("batch_num_images")
        onevision = getattr(self.config, "vision_aspect_ratio", None) is not None
        tiled = [int(n) == 1 for n in counts for _ in range(int(n))] if onevision and counts is not None else None
        tiles = [
            image_size_to_num_patches(size, self.config.image_grid_pinpoints, self.config.vision_config.image_size)
            if tiled is None or tiled[i]
            else 1
            for i, size in enumerate(sizes)
        ]
        statistics = _select_features(self.config, torch.cat(calls))[..., None]  # [tiles, T, 1]
        per_image = torch.split(statistics, tiles, dim=0)
        newline = torch.full((1,), float("nan"), device=statistics.device)
        inner = self.model.model
        if onevision:
            packed, lengths = inner.pack_image_features(
                per_image, sizes, image_newline=newline, vision_aspect_ratio=self.config.vision_aspect_ratio
            )
        else:
            packed, lengths = inner.pack_image_features(
                per_image, sizes, self.config.vision_feature_select_strategy, image_newline=newline
            )
        if isinstance(packed, torch.Tensor):  # releases that concatenate the images
            packed = torch.split(packed, [int(n) for n in lengths])
        return [image[..., 0] for image in packed]

    def vision_projector(self) -> torch.nn.Module:
        return self.model.model.multi_modal_projector

    def _layout_from_newlines(self, features: torch.Tensor, side: int) -> TokenLayout:
        """The layout read off an image's token features (`generate()` consumed `image_sizes`)."""
        return newline_layout(features, self.model.model.image_newline.detach(), side)

    def _matched_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Without `image_sizes`: each token takes the statistic of the projected patch its feature is a
        copy of (`plphp.backends.tower.match_patches`)."""
        patches = inputs.get("projected_patches")
        tokens = inputs.get("token_features")
        if patches is None or tokens is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: tower statistics need image_sizes or the projected patches"
            )
        statistics = _select_features(self.config, torch.cat(calls)).flatten()  # [tiles · T']
        return match_patches(statistics, patches.flatten(0, 1), tokens, self.model.model.image_newline.detach())


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

    def tower_attention_modules(self) -> list[torch.nn.Module]:
        """The vision blocks' attention."""
        return [block.attn for block in self.model.model.visual.blocks]

    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.visual

    def tower_inputs(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        return {"image_grid_thw": grid} if grid is not None else {}

    def tower_statistics(self, calls: list[torch.Tensor], inputs: Mapping[str, Any]) -> list[torch.Tensor]:
        """Per patch statistics of every image, in the tower's order, averaged over each merged 2x2 group;
        Qwen2.5-VL's window order is undone as its merger output is."""
        if inputs.get("pixel_values_videos") is not None or inputs.get("video_grid_thw") is not None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: vision-tower statistics are mapped for images only, and this prompt "
                "holds a video; use an input-stage collector that reads the features (diversity, features)"
            )
        vision = self.config.vision_config
        merge = int(getattr(vision, "spatial_merge_size", 1) or 1)
        grid = inputs["image_grid_thw"]
        tokens = torch.cat(calls, dim=-1).flatten().view(-1, merge * merge).mean(-1)
        if getattr(vision, "window_size", None) and hasattr(vision, "fullatt_block_indexes"):  # Qwen2.5-VL
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(grid, merge, vision.window_size, vision.patch_size)
            tokens = tokens[torch.argsort(window_index.to(tokens.device))]
        return list(torch.split(tokens, [int(t * h * w) // (merge * merge) for t, h, w in grid]))


BUILTIN_ADAPTERS = [LlavaAdapter, LlavaNextAdapter, Qwen2VLAdapter]


@hookimpl
def plphp_adapters():
    return BUILTIN_ADAPTERS
