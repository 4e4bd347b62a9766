"""The input stage (VisionZip, DivPrune, FasterVLM, pooling): only the kept vision tokens enter the decoder.

A forward pre-hook on the language model (`ModelAdapter.language_model`) sees its keyword inputs:
`inputs_embeds` `[B, L, D]` with the projected vision features already in place, the padding mask
and the position ids. `InputStage.before_language_model` scores the vision tokens from vision-side
statistics (the features, and the tower attention that `plphp.backends.tower.TowerCapture` kept
while the tower ran), picks each image's budget, optionally merges the dropped tokens into kept or
new ones, and hands the decoder a shorter sequence (`plphp.backends.prefill.TokenSequence`, kept
tokens in prompt order, right-aligned) with its own padding mask and position ids: the original
ones gathered (`positions: original`, M-RoPE's 3-D ids included) or consecutive ones
(`positions: compact`, whose decode positions the session shifts to follow). The model then builds
its own masks and RoPE; prefill, the KV cache and decoding all see only the kept tokens. In "mask"
mode (the reference) every slot stays and the dropped ones are padding. See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from plphp.backends import attention as attn
from plphp.backends.cache import PrunableLayer
from plphp.backends.prefill import TokenSequence, gather_slots, restore_logits
from plphp.backends.reporting import PrefillState, empty_report, layer_report
from plphp.backends.tower import TowerCapture
from plphp.contract import check_keep_indices, check_merge, check_shared_keep, check_stats
from plphp.errors import ConfigError, PlphpError
from plphp.ops import budget_per_sample, merge_features, scatter_mask
from plphp.policy import Policy
from plphp.report import PruningReport
from plphp.stats import VisionStats


@dataclass
class InputState:
    """What one prefill's input stage chose: the sequence that entered the decoder and how."""

    sequence: TokenSequence  # slots of the decoder's sequence (mask mode: every prompt slot)
    outputs: torch.Tensor  # [B, L] bool, the vision positions whose (merged) token entered
    retention: torch.Tensor  # [B]
    budget: list[int]
    assignment: torch.Tensor | None  # [B, L] the merger's assignment, None without a merger
    shift: torch.Tensor | None  # compact: original minus compact position of the last slot, [..., B, 1]
    scores: torch.Tensor | None


class InputStage:
    """Chooses the vision tokens that enter the decoder; the session owns one per input-stage policy.

    Args:
        policy: the policy (stage "input", a `VisionCollector`, a shared selector, maybe a merger).
        adapter: the model's adapter (language model, tower modules and statistics, layouts).
        materialize: "prune" shortens the decoder's sequence; "mask" keeps every slot and makes the
            dropped ones padding (the reference).
        record_scores: keep the collector's scores in the report.
    """

    def __init__(self, policy: Policy, adapter: Any, materialize: str, record_scores: bool):
        self.policy = policy
        self.adapter = adapter
        self.materialize = materialize
        self.record_scores = record_scores
        self.tower_module = self._tower_module(policy.collector.tower_layer)
        has_cls = adapter.tower_has_cls() if self.tower_module is not None else False
        # generate() runs the tower before the model's first forward: capture from the session's start.
        self.capture = TowerCapture(self.tower_module, has_cls) if self.tower_module is not None else None
        self.tower_inputs: dict[str, Any] = {}
        self.inputs: dict[str, Any] = {}
        self.state: InputState | None = None

    def _tower_module(self, layer: int | None) -> torch.nn.Module | None:
        if layer is None:
            return None
        modules = self.adapter.tower_attention_modules()
        if not modules:
            raise ConfigError(
                f"policy.collector: {self.policy.collector.name!r} reads the vision tower's attention, but this "
                "model has no vision tower plphp knows; use one that reads the features (diversity, features)"
            )
        if not -len(modules) <= layer < len(modules):
            raise ConfigError(
                f"policy.collector.layer: {layer} is not a layer of this vision tower, which has {len(modules)}; "
                f"allowed are {-len(modules)} to {len(modules) - 1}"
            )
        return modules[layer]

    @property
    def reads_tower(self) -> bool:
        """Whether the vision tower's attention must pass through the session's function."""
        return self.tower_module is not None

    def start(self, inputs: dict[str, Any]) -> None:
        """A new prefill: remember the model's inputs (with what the tower's call revealed)."""
        self.inputs = {**self.tower_inputs, **{k: v for k, v in inputs.items() if v is not None}}
        self.state = None

    def after_projector(self, module: Any, args: tuple, output: Any) -> None:
        """Forward hook of the vision projector: keep each patch's projected feature."""
        if isinstance(output, torch.Tensor):
            self.tower_inputs["projected_patches"] = output.detach()

    def before_tower(self, module: Any, args: tuple, kwargs: dict) -> None:
        """Pre-hook of the vision tower: a new encoding starts; keep the inputs its call reveals."""
        if self.capture is not None:
            self.capture.calls.clear()
        self.tower_inputs = dict(self.adapter.tower_inputs(args, kwargs))

    def observe_tower(self, module: Any, query: torch.Tensor, key: torch.Tensor, scaling: Any, kwargs: dict) -> None:
        """A vision-tower attention call (no `layer_idx`)."""
        if self.capture is not None:
            self.capture.observe(module, query, key, scaling, kwargs)

    # -- the decoder's input -----------------------------------------------------------------------
    def before_language_model(self, state: PrefillState, module: Any, kwargs: dict) -> dict:
        """Pre-hook of the language model: choose the tokens and shorten its inputs."""
        prompt, policy = state.prompt, self.policy
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = module.get_input_embeddings()(kwargs["input_ids"])
        batch, length = prompt.batch_size, prompt.length
        if tuple(embeds.shape[:2]) != (batch, length):
            raise PlphpError(f"the decoder's input has shape {tuple(embeds.shape)}; the prompt is [{batch}, {length}]")
        with torch.no_grad():
            features = embeds.detach()
            token_features = [features[b, segment] for b in range(batch) for segment in prompt.segments(b)]
            tower = self._tower(state, token_features)
            vision = VisionStats(features=features, tower_attention=tower, cells=self._cells(prompt, token_features))
            stats = policy.collector.collect_vision(vision, prompt)
            check_stats(stats, prompt, f"collector {policy.collector.name!r} (input stage)")
            retention = policy.retention([stats] * prompt.num_layers, prompt)[0]
            budget = budget_per_sample(retention, prompt)
            who = f"selector {policy.selector.name!r} (input stage)"
            keep = policy.selector.select(stats, retention, prompt, 0)
            check_keep_indices(keep, prompt, budget, who)
            check_shared_keep(keep, who, "the input stage feeds one set of tokens to every head")
            assignment = None
            outputs = scatter_mask(keep[:, :1], length)[:, 0]
            if policy.merger is not None:
                merger_who = f"merger {policy.merger.name!r}"
                budget = policy.merger.budget(budget, vision, prompt)
                assignment = policy.merger.merge(keep[:, 0], stats, vision, prompt)
                check_merge(assignment, budget, prompt, merger_who)
                outputs = assignment == torch.arange(length, device=assignment.device)
        if assignment is not None:
            embeds = merge_features(embeds, assignment.to(embeds.device))
        present = prompt.key_valid & (~prompt.vision_mask | outputs)
        position_ids = kwargs.get("position_ids")
        if position_ids is None:  # what the decoder would use: 0 .. L-1
            position_ids = torch.arange(length, device=embeds.device)[None].expand(batch, -1)
        if self.materialize == "prune":
            sequence, _ = TokenSequence.whole(prompt.key_valid).keep(present, move=True)
            embeds = gather_slots(embeds, sequence.index.to(embeds.device), 1)
            new_positions = gather_slots(position_ids, sequence.index.to(position_ids.device), -1)
        else:
            sequence = TokenSequence(index=TokenSequence.whole(present).index, valid=present, present=present)
            new_positions = position_ids
        shift = None
        if policy.positions == "compact":
            compact = (sequence.valid.long().cumsum(-1) - 1).clamp(min=0).to(position_ids.device)
            new_positions = compact.expand(*position_ids.shape[:-2], -1, -1)
            shift = position_ids[..., -1:] - new_positions[..., -1:]
        padded = not bool(sequence.valid.all())
        for idx in range(prompt.num_layers):
            layer = PrunableLayer(prompt_valid=sequence.valid if padded else None)
            layer.compressed = True  # decoding attends with the layer's own mask
            state.cache.layers[idx] = layer
        kept_scores = stats.scores if self.record_scores else None
        self.state = InputState(sequence, outputs, retention, budget, assignment, shift, kept_scores)
        mask = sequence.valid.long().to(embeds.device)
        return {
            **kwargs,
            "input_ids": None,
            "inputs_embeds": embeds,
            "attention_mask": mask,
            "position_ids": new_positions,
        }

    def _tower(self, state: PrefillState, token_features: list[torch.Tensor]) -> torch.Tensor | None:
        """`[B, L]` the tower statistic at vision positions (NaN elsewhere), or None when not read."""
        if self.capture is None:
            return None
        if not self.capture.calls:
            raise PlphpError(
                "the vision tower's attention was not seen during this prefill (no pixel values, or cached image "
                "features); the input stage's collector needs it"
            )
        prompt = state.prompt
        per_image = self.adapter.tower_statistics(self.capture.calls, {**self.inputs, "token_features": token_features})
        self.capture.calls.clear()
        per_image = [per_image[j] for j in expansion(prompt, len(per_image))]
        out = torch.full((prompt.batch_size, prompt.length), float("nan"), device=prompt.vision_mask.device)
        image = 0
        for b in range(prompt.batch_size):
            for segment in prompt.segments(b):
                if image >= len(per_image) or per_image[image].numel() != len(segment):
                    found = per_image[image].numel() if image < len(per_image) else 0
                    raise PlphpError(
                        f"image {image}: the tower statistics give {found} values for its {len(segment)} vision tokens"
                    )
                out[b, segment] = per_image[image].float().to(out.device)
                image += 1
        return out

    def _cells(self, prompt: Any, token_features: list[torch.Tensor]) -> tuple:
        """Per sample, per image, the cell of each vision token (the adapter's layouts)."""
        inputs = {**self.inputs, "token_features": token_features}
        grid = inputs.get("image_grid_thw")
        if isinstance(grid, torch.Tensor) and "image_grid_thw" in self.tower_inputs:  # unexpanded, from the tower
            inputs["image_grid_thw"] = grid[torch.tensor(expansion(prompt, grid.shape[0]), device=grid.device)]
        layouts = self.adapter.image_layouts(inputs)
        return tuple(tuple(layout.cells for _, layout in sample) for sample in layouts)

    # -- decoding and the end of prefill ---------------------------------------------------------------
    def decode_kwargs(self, kwargs: dict) -> dict:
        """A decoding step's model inputs: compact positions continue from the shorter prompt."""
        state = self.state
        position_ids = kwargs.get("position_ids")
        if state is None or state.shift is None or not isinstance(position_ids, torch.Tensor):
            return kwargs
        shift = state.shift.to(position_ids.device)
        if shift.dim() == 3 and position_ids.dim() == 2:  # M-RoPE rows all move alike: take one
            shift = shift[-1]
        elif shift.dim() == 3 and position_ids.shape[0] != shift.shape[0]:  # 4 rows (text + 3-D) vs 3
            shift = shift[-position_ids.shape[0] :]
        return {**kwargs, "position_ids": position_ids - shift}

    def finish(self, state: PrefillState) -> None:
        """After prefill: with original positions the cache's logical length is the whole prompt."""
        if self.state is None or self.policy.positions != "original":
            return
        for layer in state.cache.layers:
            if isinstance(layer, PrunableLayer):
                layer.seen = state.prompt.length

    def restore_positions(self, output: Any, state: PrefillState) -> Any:
        """Give a full forward's per-position logits back their prompt positions (NaN where no token entered)."""
        if self.state is None or self.materialize != "prune":
            return output
        return restore_logits(output, self.state.sequence, state.prompt.length)

    def report(self, state: PrefillState) -> PruningReport:
        """Every layer held the same tokens: the ones that entered the decoder."""
        prompt, chosen = state.prompt, self.state
        report = empty_report(self.policy, prompt.batch_size, prompt.length, prompt.num_vision.tolist())
        if chosen is None:
            report.note = "the language model was not called, so nothing entered it"
            return report
        sequence = chosen.sequence
        report.input_positions = torch.where(sequence.valid, sequence.index, -1)
        report.merge_assignment = chosen.assignment
        outputs = chosen.outputs & prompt.vision_mask
        width = int(outputs.sum(-1).max()) if outputs.numel() else 0
        order = torch.arange(prompt.length, device=outputs.device).expand_as(outputs)
        ranked = torch.where(outputs, order, order + prompt.length).sort(-1).values[:, :width]
        keep = torch.where(ranked < prompt.length, ranked, -1)[:, None, :].expand(-1, prompt.num_kv_heads, -1)
        gamma = torch.full((prompt.batch_size,), float("nan"), device=outputs.device)
        for idx in range(prompt.num_layers):
            layer = state.cache.layers[idx]
            element = layer.keys.element_size() if getattr(layer, "keys", None) is not None else 0
            before = 2 * prompt.batch_size * prompt.num_kv_heads * prompt.length * prompt.head_dim * element
            report.layers.append(
                layer_report(
                    idx,
                    layer,
                    prompt,
                    chosen.retention,
                    gamma,
                    keep,
                    budget=chosen.budget,
                    kv_bytes_before=before,
                    scores=chosen.scores,
                )
            )
        self.state = None if self.policy.positions == "original" else self.state
        return report

    # -- hooks on the model ------------------------------------------------------------------------
    def install(self, model: Any, before_decoder: Any, name: str) -> list[Any]:
        """The stage's hooks on `model`: `before_decoder` (the session's pre-hook) on the language
        model, a pre-hook on the vision tower, a hook on the projector, and, when the collector reads
        the tower, the tower's attention routed through a function registered as `name` that passes
        it on untouched and lets the stage read one layer's statistic.

        Returns:
            The hook handles (the session removes them); `uninstall` restores the tower's attention.
        """
        adapter = self.adapter
        hooks = [adapter.language_model().register_forward_pre_hook(before_decoder, with_kwargs=True)]
        tower = adapter.vision_tower()
        if tower is not None:
            hooks.append(tower.register_forward_pre_hook(self.before_tower, with_kwargs=True))
        projector = adapter.vision_projector()
        if projector is not None and self.reads_tower:
            hooks.append(projector.register_forward_hook(self.after_projector))
        if self.reads_tower:
            vision_config = getattr(model.config, adapter.vision_config_key)
            self._tower_impl = (name, vision_config._attn_implementation)
            base_name = vision_config._attn_implementation or "sdpa"
            base = attn.base_attention(base_name)

            def tower_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
                self.observe_tower(module, query, key, scaling, kwargs)
                return base(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)

            attn.register(name, tower_attention, base_name)
            model.set_attn_implementation({adapter.vision_config_key: name})
        return hooks

    def uninstall(self, model: Any) -> None:
        """Give the vision tower back its own attention implementation."""
        name, original = getattr(self, "_tower_impl", (None, None))
        if name is None:
            return
        vision_config = getattr(model.config, self.adapter.vision_config_key, None)
        if vision_config is not None and vision_config._attn_implementation == name:
            model.set_attn_implementation({self.adapter.vision_config_key: original})
        attn.unregister(name)
        self._tower_impl = (None, None)


def expansion(prompt: Any, count: int) -> list[int]:
    """For each image of the prompt (rows in order), the index of the encoded image it shows.

    `generate()` encodes the images of the batch once and then repeats each row for beams and returned
    sequences (`repeat_interleave`), so `count` encoded images may stand for `r` times as many.
    """
    per_row = [len(prompt.segments(b)) for b in range(prompt.batch_size)]
    total = sum(per_row)
    if total == count:
        return list(range(count))
    repeats = total // count if count else 0
    if not repeats or total % count or prompt.batch_size % repeats:
        raise PlphpError(f"the prompt holds {total} images, but the vision tower encoded {count}")
    mapping, first = [], 0
    for row in range(0, prompt.batch_size, repeats):
        mapping += [first + i for _ in range(repeats) for i in range(per_row[row])]
        first += per_row[row]
    return mapping
