"""Train the grid model v2 (`plphp.models.grid_v2`): patch-local vision tokens, 16 decoder layers.

Deterministic like v1's script (`train_grid_model.py`, whose task batches, schedule and evaluation
it reuses): every draw comes from `--seed`, and the same command with the same `--threads` on the
same machine gives the same weights, bit for bit. CI never trains; the weights ship in
`plphp/models/grid_v2/`.

Recipe:

1. **Vision stage.** v2's vision tokens see only their own 12 x 12 pixels (SigLIP read before any
   attention between patches), so no loss can make a patch carry its cell. Each token is trained
   to tell what its pixels show: the row and column of its cell, the colour of the shape there
   and which part of which shape it covers (kind x quadrant). And the **mean** of a cell's four
   tokens is regressed onto v1's projected feature of that cell (`--init-from`), so that the
   pooled cell reads like v1's token while each patch holds only its quadrant.
2. **Decoder warm start** from v1 (`--init-from`): embeddings, final norm, LM head and v1's eight
   layers as v2's even layers; each odd layer starts as the identity (output projections zero), so
   step 0 is v1's decoder reading v2's tokens.
3. **Joint stage.** Everything trains on v1's task batches (five questions per chat, question-word
   loss), single-image and multi-image batches alternating (`--multi-every`), on the real 36-token
   images with v2's chat template (the ordinal label after each image). Two heads that are dropped
   afterwards add losses: `--label-loss`, which shapes each picture shows, from its label token;
   and `--answer-preview`, which words the whole answer holds, from the position that predicts
   its first word (the prompt's last token).

`--layout quadrant` (the shipped model's) draws every picture with each shape small, in one
quadrant of its cell (`plphp.tasks`, "Layouts"), so that each shape lies in one vision token; v1's
teacher sees the same cells drawn its own way.
4. Held-out evaluation on `make_tasks(split="test")` through `model.generate()`, in `training.json`.

A `compare` curriculum, unused by the shipped command (docs/grid-model.md, runs d-m): the first
`--compare-only-steps` decoder steps train on `compare` chats alone, optionally on fewer pictures,
with an ordinal scaffold on the vision tokens or with colour-count follow-ups; and, a diagnostic,
`--compare-answer-prefix` puts a fixed first word before every trained `compare` answer.

Usage:
    python training/train_grid_v2.py --out plphp/models/grid_v2
    python training/train_grid_v2.py --out /tmp/g2 --vision-steps 3 --decoder-steps 3 --eval-items 10
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageTextToText

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_grid_model as v1_script  # noqa: E402
from train_grid_model import evaluate, log, lr_at, task_batch  # noqa: E402

from plphp.models.grid import ROLE_WORDS, SPECIAL_TOKENS, grid_generation_config, load_grid_model  # noqa: E402
from plphp.models.grid_v2 import (  # noqa: E402
    IMAGE_SIZE,
    PATCH_SIZE,
    build_grid_v2_config,
    build_grid_v2_processor,
)
from plphp.tasks import (  # noqa: E402
    COLORS,
    KINDS,
    LAYOUTS,
    ORDINALS,
    SHAPES,
    Shape,
    make_task,
    random_scene,
    vocabulary,
    with_layout,
)

ROWS = COLS = 3
SIDE = IMAGE_SIZE // PATCH_SIZE  # 6 tokens per side, 2 x 2 per cell
PER_CELL = SIDE // ROWS
SINGLE_KINDS = ("locate", "identify", "count", "list_row")
COLOR_NAMES = list(COLORS)
V1_SIDE = 9


def patch_targets(scene) -> torch.Tensor:
    """[SIDE * SIDE, 4]: row, column, colour (0 = empty) and shape part (0 = empty, else kind x quadrant).

    In a `quadrant` scene a shape lies in one patch, its spot; the cell's other patches are empty.
    """
    targets = torch.zeros(SIDE, SIDE, 4, dtype=torch.long)
    for i in range(SIDE):
        for j in range(SIDE):
            row, col = i // PER_CELL + 1, j // PER_CELL + 1
            shape = scene.cells.get((row, col))
            quadrant = (i % PER_CELL) * PER_CELL + j % PER_CELL
            if scene.spots.get((row, col), quadrant) != quadrant:
                shape = None
            color = COLOR_NAMES.index(shape.color) + 1 if shape else 0
            part = 1 + SHAPES.index(shape.kind) * PER_CELL**2 + quadrant if shape else 0
            targets[i, j] = torch.tensor([row - 1, col - 1, color, part])
    return targets.reshape(SIDE * SIDE, 4)


def cell_means(features: torch.Tensor, side: int) -> torch.Tensor:
    """[B, side*side, D] -> [B, 9, D]: the mean of each grid cell's tokens."""
    per = side // ROWS
    return features.view(-1, ROWS, per, COLS, per, features.shape[-1]).mean(dim=(2, 4)).flatten(1, 2)


def train_vision(model, processor, teacher, teacher_processor, args, rng) -> dict:
    inner = model.model
    width = model.config.text_config.hidden_size
    classes = (ROWS, COLS, len(COLORS) + 1, 1 + len(SHAPES) * PER_CELL**2)
    heads = torch.nn.Linear(width, sum(classes))
    params = [*inner.vision_tower.parameters(), *inner.multi_modal_projector.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.0)

    def batch(generator, size):
        scenes = []
        for _ in range(size):
            scene = random_scene(generator, ROWS, COLS, 96, min_shapes=1, max_shapes=int(generator.integers(1, 10)))
            scenes.append(scene if args.layout == "cell" else with_layout(scene, args.layout, generator))
        pixels = processor.image_processor([scene.render() for scene in scenes], return_tensors="pt")["pixel_values"]
        with torch.no_grad():  # v1 reads the same cells drawn its own way, shapes filling them
            images = [with_layout(scene, "cell", generator).render() for scene in scenes]
            v1_pixels = teacher_processor.image_processor(images, return_tensors="pt")["pixel_values"]
            target = cell_means(torch.stack(teacher.model.get_image_features(pixel_values=v1_pixels).pooler_output), 9)
        return pixels, torch.stack([patch_targets(scene) for scene in scenes]), target

    def losses(pixels, targets, target_cells):
        features = torch.stack(inner.get_image_features(pixel_values=pixels).pooler_output)
        logits = heads(features).split(classes, dim=-1)
        ce = sum(F.cross_entropy(part.flatten(0, 1), targets[..., k].flatten()) for k, part in enumerate(logits))
        mse = F.mse_loss(cell_means(features, SIDE), target_cells)
        return features, logits, ce, mse

    for step in range(1, args.vision_steps + 1):
        pixels, targets, target_cells = batch(rng, args.vision_batch)
        _, logits, ce, mse = losses(pixels, targets, target_cells)
        loss = ce + args.distill * mse
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = args.vision_lr * (0.5 * (1 + math.cos(math.pi * step / args.vision_steps)))
        if step % 50 == 0 or step == args.vision_steps:
            accuracy = [round(float((p.argmax(-1) == targets[..., k]).float().mean()), 3) for k, p in enumerate(logits)]
            log(f"vision {step}/{args.vision_steps} ce {ce.item():.4f} mse {mse.item():.4f} acc {accuracy}")
    with torch.no_grad():  # held-out
        pixels, targets, target_cells = batch(np.random.default_rng([args.seed, 99]), 256)
        features, logits, _, mse = losses(pixels, targets, target_cells)
        names = ("row", "column", "colour", "shape_part")
        accuracy = {
            n: round(float((p.argmax(-1) == targets[..., k]).float().mean()), 4)
            for k, (n, p) in enumerate(zip(names, logits))
        }
        rms = float(features.pow(2).mean().sqrt())
    log(f"vision held-out patch accuracy {accuracy}, cell-mean mse to v1 {mse.item():.4f}, feature RMS {rms:.3f}")
    return {"patch_accuracy": accuracy, "cell_mean_mse_to_v1": round(mse.item(), 5), "feature_rms": round(rms, 4)}


def warm_start(model, teacher) -> None:
    """v1's embeddings, norm, head; v1 layer i -> v2 layer 2i; odd layers the identity."""
    source, target = teacher.model.language_model, model.model.language_model
    with torch.no_grad():
        target.embed_tokens.weight.copy_(source.embed_tokens.weight)
        target.norm.weight.copy_(source.norm.weight)
        model.lm_head.weight.copy_(teacher.lm_head.weight)
        for index, layer in enumerate(target.layers):
            if index % 2 == 0 and index // 2 < len(source.layers):
                layer.load_state_dict(source.layers[index // 2].state_dict())
            else:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()


ALL_SHAPES = [Shape(color, kind) for color in COLORS for kind in SHAPES]


def label_summary_loss(hidden_states, input_ids, items, head, ordinal_ids, image_id) -> torch.Tensor:
    """BCE of `head` on each image's label token (the ordinal after its `<image>` run): which shapes it shows."""
    after_image = torch.zeros_like(input_ids, dtype=torch.bool)
    after_image[:, 1:] = input_ids[:, :-1] == image_id
    is_label = after_image & torch.isin(input_ids, ordinal_ids)
    states, targets = [], []
    for b, item in enumerate(items):
        positions = is_label[b].nonzero().flatten()[: len(item.scenes)]
        for position, scene in zip(positions.tolist(), item.scenes):
            states.append(hidden_states[b, position])
            present = set(scene.cells.values())
            targets.append(torch.tensor([float(shape in present) for shape in ALL_SHAPES]))
    return F.binary_cross_entropy_with_logits(head(torch.stack(states)), torch.stack(targets))


def answer_preview_loss(hidden, targets, head, end_id: int, every_position: bool = False) -> torch.Tensor:
    """BCE of `head` at each answer's first position (the prompt's last token): which words the whole answer holds.

    `hidden` [B, T, D] are the states that predict `targets` [B, T] (labels shifted by one, -100
    outside answers). The first position of every answer span is where the answer's first word
    is predicted; the preview makes that state gather what the rest of the answer needs, as the
    last prompt token of a large model does when it plans its answer. `every_position`: at every
    position of an answer, the words from the one it predicts to the answer's end.
    """
    answer = targets != -100
    starts = answer & ~torch.cat([torch.zeros_like(answer[:, :1]), answer[:, :-1]], dim=1)
    turn = starts.long().cumsum(dim=1)
    index = torch.arange(targets.shape[1])
    states, bags = [], []
    for b, position in (answer if every_position else starts).nonzero().tolist():
        rest = answer[b] & (turn[b] == turn[b, position]) & (index >= position)
        words = targets[b][rest & (targets[b] != end_id)]
        bag = torch.zeros(head.out_features)
        bag[words] = 1.0
        states.append(hidden[b, position])
        bags.append(bag)
    return F.binary_cross_entropy_with_logits(head(torch.stack(states)), torch.stack(bags))


def scaffolded_embeds(inner, batch, image_id: int, ordinal_ids: torch.Tensor, weight: float) -> torch.Tensor:
    """[B, T, D] input embeddings with each picture's vision tokens plus `weight` x its ordinal's embedding.

    A scaffold for the `compare` curriculum: it hands every vision token the picture it belongs to,
    which the model must otherwise work out from positions, and it fades to nothing (`weight` 0 is
    the real prompt).
    """
    ids = batch["input_ids"]
    embeds = inner.get_input_embeddings()(ids)
    features = torch.cat(list(inner.get_image_features(pixel_values=batch["pixel_values"]).pooler_output))
    is_image = ids == image_id
    picture = (is_image.long().cumsum(dim=1) - 1) // (SIDE * SIDE)  # [B, T]: index of the picture in its chat
    features = features + weight * inner.get_input_embeddings()(ordinal_ids[picture[is_image]])
    return embeds.masked_scatter(is_image[..., None], features.to(embeds.dtype))


def counting_more_questions(more_questions, colour_counts: float, picture_counts: float):
    """v1's `more_questions`, whose `compare` follow-ups count one colour and shape with probability `colour_counts`.

    "How many red circles are there?" over all the pictures (the shape absent half the time): the
    search `compare` needs for its first answer word, without the picture it is in. A share
    `picture_counts` of them count in one picture named by its ordinal ("... in the second?"),
    whose count is nonzero exactly when `compare` names that picture. Each follow-up draws from
    `rng` in turn, as v1's does.
    """

    def follow_ups(rng, item, count: int, image_questions: float = 0.5) -> list[tuple[str, str]]:
        turns = []
        for _ in range(count):
            if not (item.kind == "compare" and colour_counts and rng.random() < colour_counts):
                turns += more_questions(rng, item, 1, image_questions)
                continue
            present = sorted({shape for scene in item.scenes for shape in scene.cells.values()}, key=Shape.describe)
            absent = [shape for shape in ALL_SHAPES if shape not in present]
            pool = absent if absent and rng.random() < 0.5 else present
            target = pool[int(rng.integers(len(pool)))]
            scenes, where = item.scenes, ""
            if picture_counts and rng.random() < picture_counts:
                image = int(rng.integers(len(item.scenes)))
                scenes, where = item.scenes[image : image + 1], f" in the {ORDINALS[image]}"
            total = sum(shape == target for scene in scenes for shape in scene.cells.values())
            answer = f"{total} {target.kind}" + ("" if total == 1 else "s")
            turns.append((f"how many {target.color} {target.kind}s are there{where}?", answer))
        return turns

    return follow_ups


def prefixed(item, prefix: str):
    """`item` with `prefix` before its answer if it is a `compare` task."""
    return dataclasses.replace(item, answer=prefix + item.answer) if item.kind == "compare" else item


def train_decoder(model, processor, args, rng) -> list[dict]:
    inner = model.model
    params = [p for p in model.parameters() if p.requires_grad]
    drawn, head = [], None
    v1_script.make_task = functools.partial(make_task, layout=args.layout)  # the pictures of `--layout`
    if args.label_loss:  # record the drawn items (their scenes) and train a summary head on the labels
        head = torch.nn.Linear(model.config.text_config.hidden_size, len(ALL_SHAPES))
        params += list(head.parameters())
        draw_laid_out = v1_script.make_task
        v1_script.make_task = lambda *a, **k: drawn.append(draw_laid_out(*a, **k)) or drawn[-1]
    preview = None
    if args.answer_preview:  # a head on the answer's first position that names every word of the answer
        preview = torch.nn.Linear(model.config.text_config.hidden_size, model.config.text_config.vocab_size)
        params += list(preview.parameters())
    ordinal_ids = torch.tensor(processor.tokenizer.convert_tokens_to_ids(list(ORDINALS)))
    if args.compare_answer_prefix:  # a diagnostic: every trained `compare` answer starts with a fixed word
        prefix, draw, answer_of = args.compare_answer_prefix + " ", v1_script.make_task, v1_script.answer_for
        v1_script.make_task = lambda kind, *a, **k: prefixed(draw(kind, *a, **k), prefix)
        v1_script.answer_for = lambda kind, *a: (prefix if kind == "compare" else "") + answer_of(kind, *a)
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    ids = {
        name: processor.tokenizer.convert_tokens_to_ids(token)
        for name, token in (("assistant", "assistant"), ("end", "<|im_end|>"), ("image", "<image>"))
    }
    ids["first_word"] = len(SPECIAL_TOKENS) + len(ROLE_WORDS)
    more_questions = v1_script.more_questions
    counting = counting_more_questions(more_questions, args.compare_only_counts, args.compare_only_picture_counts)
    model.train()
    history, window = [], []
    started = time.perf_counter()
    last_step = min(args.decoder_steps, args.stop_after or args.decoder_steps)
    for step in range(1, last_step + 1):
        compare_only = step <= args.compare_only_steps  # the curriculum: compare alone, then the mix
        multi = compare_only or step % args.multi_every == 0
        kinds, size = (("compare",), args.batch // 2) if multi else (SINGLE_KINDS, args.batch)
        max_images = args.compare_only_images if compare_only else 4
        v1_script.more_questions = counting if compare_only and args.compare_only_counts else more_questions
        drawn.clear()
        batch, labels, question_labels, batch_kinds = task_batch(
            rng, processor, kinds, size, args.turns, ids, args.image_questions, max_images
        )
        scaffold = args.compare_scaffold * (1 - (step - 1) / args.compare_only_steps) if compare_only else 0.0
        if scaffold:  # the picture's ordinal on its vision tokens, fading out over the curriculum
            outputs = inner.language_model(
                inputs_embeds=scaffolded_embeds(inner, batch, ids["image"], ordinal_ids, scaffold),
                attention_mask=batch["attention_mask"],
                output_hidden_states=bool(head is not None) or args.preview_layer >= 0,
            )
        else:
            outputs = inner(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                output_hidden_states=bool(head is not None and multi) or args.preview_layer >= 0,
            )
        hidden = outputs.last_hidden_state
        logits = model.lm_head(hidden[:, :-1])
        targets = labels[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        if args.question_loss:
            questions = question_labels[:, 1:].flatten()
            loss = loss + args.question_loss * F.cross_entropy(logits.flatten(0, 1), questions, ignore_index=-100)
        if preview is not None:
            states = hidden if args.preview_layer < 0 else outputs.hidden_states[args.preview_layer]
            preview_loss = answer_preview_loss(
                states[:, :-1], targets, preview, ids["end"], args.preview_every_position
            )
            loss = loss + args.answer_preview * preview_loss
        if head is not None and multi:
            summary = label_summary_loss(
                outputs.hidden_states[args.label_layer], batch["input_ids"], drawn, head, ordinal_ids, ids["image"]
            )
            loss = loss + args.label_loss * summary
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        optimizer.step()
        with torch.no_grad():  # the first answer of each chat: the single-turn task itself
            answer = targets != -100
            ends_before = ((targets == ids["end"]) & answer).long().cumsum(dim=1) - (targets == ids["end"]).long()
            first = answer & (ends_before == 0)
            correct = ((logits.argmax(-1) == targets) | ~first).all(dim=1)
        window += [(kind, ok, loss.item()) for kind, ok in zip(batch_kinds, correct.tolist())]
        if step % args.log_every == 0 or step == last_step:
            seen = [k for k in KINDS if any(kind == k for kind, *_ in window)]
            per_kind = {k: round(float(np.mean([ok for kind, ok, _ in window if kind == k])), 3) for k in seen}
            mean_loss = float(np.mean([value for *_, value in window]))
            elapsed = time.perf_counter() - started
            log(
                f"decoder {step}/{args.decoder_steps} loss {mean_loss:.4f} teacher-forced {per_kind} ({elapsed / step:.2f} s/step)"
            )
            history.append({"step": step, "loss": mean_loss, "teacher_forced_exact": per_kind})
            window = []
        if args.checkpoint and step % args.log_every == 0:
            torch.save(model.state_dict(), args.checkpoint)
        if args.eval_every and step % args.eval_every == 0 and step < last_step:
            model.eval()
            log(f"held-out at step {step}: {evaluate(model, processor, args.eval_every_items, args)['per_kind']}")
            model.train()
    v1_script.more_questions, v1_script.make_task = more_questions, make_task
    model.eval()
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init-from", type=Path, default=None, help="v1 checkpoint (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the result depends on it)")
    parser.add_argument("--vision-steps", type=int, default=400)
    parser.add_argument("--vision-batch", type=int, default=32)
    parser.add_argument("--vision-lr", type=float, default=3e-3)
    parser.add_argument("--distill", type=float, default=1.0, help="weight of the cell-mean regression onto v1")
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="cell", help="the pictures: shapes filling cells, or small in a quadrant"
    )
    parser.add_argument("--decoder-steps", type=int, default=3000)
    parser.add_argument("--stop-after", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--multi-every", type=int, default=2)
    parser.add_argument("--image-questions", type=float, default=0.3)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--question-loss", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--init-std", type=float, default=0.08)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--eval-every-items", type=int, default=100)
    parser.add_argument("--eval-items", type=int, default=500)
    parser.add_argument("--eval-batch", type=int, default=25)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--resume", type=Path, default=None, help="start from this v2 directory: no vision stage")
    parser.add_argument("--label-loss", type=float, default=0.0, help="weight of the label tokens' summary loss")
    parser.add_argument("--label-layer", type=int, default=8, help="hidden state the summary head reads")
    parser.add_argument(
        "--answer-preview", type=float, default=0.0, help="weight of the answer preview loss at each answer's start"
    )
    parser.add_argument(
        "--preview-layer", type=int, default=-1, help="hidden state the preview head reads (-1: the final one)"
    )
    parser.add_argument(
        "--preview-every-position", action="store_true", help="the preview at every answer position: the words to come"
    )
    parser.add_argument("--compare-only-steps", type=int, default=0, help="first decoder steps on `compare` alone")
    parser.add_argument(
        "--compare-only-images", type=int, default=4, help="most pictures per chat in those steps (2 to 4)"
    )
    parser.add_argument(
        "--compare-scaffold", type=float, default=0.0, help="ordinal embedding on vision tokens then, fading to 0"
    )
    parser.add_argument(
        "--compare-only-counts", type=float, default=0.0, help="share of follow-ups then counting a colour and shape"
    )
    parser.add_argument(
        "--compare-only-picture-counts", type=float, default=0.0, help="share of those counts in one named picture"
    )
    parser.add_argument(
        "--compare-answer-prefix", default="", help="diagnostic: a fixed word before trained `compare` answers"
    )
    args = parser.parse_args(argv)
    if not 2 <= args.compare_only_images <= len(ORDINALS):
        parser.error(f"--compare-only-images: {args.compare_only_images} is not allowed; use 2 to {len(ORDINALS)}")
    if args.compare_answer_prefix and args.compare_answer_prefix not in vocabulary():
        parser.error(f"--compare-answer-prefix: {args.compare_answer_prefix!r} is not allowed; use a word of the tasks")
    for name in ("compare_only_counts", "compare_only_picture_counts"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} is not allowed; use a share from 0 to 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data_rng = np.random.default_rng([args.seed, 17])
    teacher, teacher_processor = load_grid_model(args.init_from)
    processor = build_grid_v2_processor()
    model = AutoModelForImageTextToText.from_config(
        build_grid_v2_config(initializer_range=args.init_std), attn_implementation="sdpa"
    )
    model.generation_config = grid_generation_config()
    log(f"grid model v2: {model.num_parameters() / 1e6:.2f} M parameters, {args.threads} thread(s), seed {args.seed}")
    started = time.perf_counter()
    if args.resume:  # a second stage on a v2 checkpoint
        model = AutoModelForImageTextToText.from_pretrained(args.resume, attn_implementation="sdpa")
        model.generation_config = grid_generation_config()
        vision = {"resumed_from": str(args.resume)}
    else:
        vision = train_vision(model, processor, teacher, teacher_processor, args, data_rng)
        warm_start(model, teacher)
    history = train_decoder(model, processor, args, data_rng)
    training_seconds = time.perf_counter() - started
    result = evaluate(model, processor, args.eval_items, args)
    log(f"held-out: {result}")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    record = {
        "settings": settings,
        "command": " ".join(["python", "training/train_grid_v2.py", *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__,
        "training_seconds": round(training_seconds, 1),
        "vision": vision,
        "history": history,
        "held_out": result,
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {args.out} ({training_seconds / 60:.1f} min of training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
