"""Train the grid model (`plphp.models.grid`) on the synthetic grid tasks and save it.

Deterministic: every random draw comes from `--seed` (numpy streams for the data, torch's
generator for the weights and dropout-free training), and a run with the same seed and the same
`--threads` on the same machine gives the same weights. It runs on a CPU in about an hour on two
cores and once only: the weights ship in `plphp/models/grid_llava/`; CI never trains.

Recipe (what made the decoder's retrieval learnable in this budget):

1. **Vision stage.** The SigLIP tower and LLaVA's projector are trained alone with a per-patch
   loss: from its projected feature, every vision token predicts the row, the column, the colour
   and the shape of the grid cell it lies in (linear heads, dropped afterwards). Minutes, ~100%.
2. The projector is then frozen and its output rescaled to unit RMS; the decoder's token
   embeddings are drawn at the same scale, so text and vision tokens enter the residual stream
   alike.
3. **Decoder stage.** The Qwen2 language model learns the five task kinds from those fixed
   features, with the loss on the answer tokens (and `<|im_end|>`). Single-image and multi-image
   questions come in separate batches so that short prompts are not padded to four images.
4. Held-out evaluation on `make_tasks(split="test")` through `model.generate()`, per kind, and
   `eval.json` beside the weights.

Usage:
    python training/train_grid_model.py --out plphp/models/grid_llava
    python training/train_grid_model.py --out /tmp/grid --vision-steps 5 --decoder-steps 5 --eval-items 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForImageTextToText

from plphp.models.grid import (
    IMAGE_SIZE,
    PATCH_SIZE,
    ROLE_WORDS,
    SPECIAL_TOKENS,
    build_grid_config,
    build_grid_processor,
    grid_generation_config,
)
from plphp.tasks import (
    COLORS,
    KINDS,
    ORDINALS,
    SHAPES,
    Shape,
    answer_for,
    make_task,
    make_tasks,
    question_for,
    random_scene,
)
from plphp.tasks.scoring import exact_match, token_accuracy

ROWS = COLS = 3
SCENE_SIZE = 96
SIDE = IMAGE_SIZE // PATCH_SIZE  # vision tokens per side
SINGLE_KINDS = ("locate", "identify", "count", "list_row")
COLOR_NAMES = list(COLORS)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- stage 1: vision tower and projector, per-patch supervision ----------------------------------


def patch_targets(scene) -> torch.Tensor:
    """[SIDE * SIDE, 4]: row, column, colour (0 = empty) and shape (0 = empty) of each patch's cell."""
    targets = torch.zeros(SIDE, SIDE, 4, dtype=torch.long)
    for i in range(SIDE):
        for j in range(SIDE):
            row, col = i * ROWS // SIDE + 1, j * COLS // SIDE + 1
            shape = scene.cells.get((row, col))
            color = COLOR_NAMES.index(shape.color) + 1 if shape else 0
            kind = SHAPES.index(shape.kind) + 1 if shape else 0
            targets[i, j] = torch.tensor([row - 1, col - 1, color, kind])
    return targets.reshape(SIDE * SIDE, 4)


def vision_batch(rng: np.random.Generator, processor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = [
        random_scene(rng, ROWS, COLS, SCENE_SIZE, min_shapes=1, max_shapes=int(rng.integers(1, ROWS * COLS + 1)))
        for _ in range(size)
    ]
    pixels = processor.image_processor([scene.render() for scene in scenes], return_tensors="pt")["pixel_values"]
    return pixels, torch.stack([patch_targets(scene) for scene in scenes])


def train_vision(model, processor, args, rng: np.random.Generator) -> dict:
    inner = model.model
    width = model.config.text_config.hidden_size
    classes = (ROWS, COLS, len(COLORS) + 1, len(SHAPES) + 1)
    heads = torch.nn.Linear(width, sum(classes))
    params = [*inner.vision_tower.parameters(), *inner.multi_modal_projector.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.0)
    inner.vision_tower.train()
    for step in range(1, args.vision_steps + 1):
        pixels, targets = vision_batch(rng, processor, args.vision_batch)
        features = torch.stack(inner.get_image_features(pixel_values=pixels).pooler_output)
        logits = heads(features).split(classes, dim=-1)
        loss = sum(F.cross_entropy(part.flatten(0, 1), targets[..., k].flatten()) for k, part in enumerate(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = args.vision_lr * (0.5 * (1 + math.cos(math.pi * step / args.vision_steps)))
        if step % 50 == 0 or step == args.vision_steps:
            accuracy = [float((part.argmax(-1) == targets[..., k]).float().mean()) for k, part in enumerate(logits)]
            log(f"vision {step}/{args.vision_steps} loss {loss.item():.4f} acc row/col/colour/shape {accuracy}")
    inner.vision_tower.eval()
    with torch.no_grad():  # held-out patch accuracy
        pixels, targets = vision_batch(np.random.default_rng([args.seed, 99]), processor, 256)
        features = torch.stack(inner.get_image_features(pixel_values=pixels).pooler_output)
        logits = heads(features).split(classes, dim=-1)
        accuracy = {
            name: float((part.argmax(-1) == targets[..., k]).float().mean())
            for k, (name, part) in enumerate(zip(("row", "column", "colour", "shape"), logits))
        }
        rms = float(features.pow(2).mean().sqrt())
    log(f"vision held-out patch accuracy {accuracy}, feature RMS {rms:.3f}")
    projector = inner.multi_modal_projector
    with torch.no_grad():  # unit-RMS features, the scale of the decoder's token embeddings
        projector.linear_2.weight.div_(rms)
        projector.linear_2.bias.div_(rms)
    return {"patch_accuracy": accuracy, "feature_rms_before_rescale": rms}


# -- stage 2: the decoder on the tasks -----------------------------------------------------------


def conversation(turns: list[tuple[str, str]], images: int) -> list[dict]:
    """A chat over `images` pictures: the first user turn holds them, every turn a (question, answer)."""
    messages = []
    for index, (question, answer) in enumerate(turns):
        content: list[dict] | str = question
        if index == 0:
            content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return messages


def more_questions(rng: np.random.Generator, item, count: int, image_questions: float = 0.5) -> list[tuple[str, str]]:
    """`count` further questions about the same pictures as `item`, their kinds drawn like its own.

    Chats about several pictures also ask, with probability `image_questions`, for one cell of one picture named by
    its ordinal ("what is in row 2 column 3 in the second?"), a question of the tasks' own words
    that only a model which knows each vision token's picture can answer; `compare` needs that.
    """
    turns = []
    for _ in range(count):
        if item.kind == "compare" and image_questions and rng.random() < image_questions:
            # one cell of one picture, named by its ordinal: trains each vision token to know its image
            image = int(rng.integers(len(item.scenes)))
            row, col = int(rng.integers(1, ROWS + 1)), int(rng.integers(1, COLS + 1))
            shape = item.scenes[image].cells.get((row, col))
            question = f"what is in row {row} column {col} in the {ORDINALS[image]}?"
            turns.append((question, shape.describe() if shape else "empty"))
            continue
        if item.kind == "compare":
            present = sorted({shape for scene in item.scenes for shape in scene.cells.values()}, key=Shape.describe)
            absent = [Shape(c, k) for c in COLORS for k in SHAPES if Shape(c, k) not in present]
            pool = absent if absent and rng.random() < 0.2 else present  # as make_task draws them
            target = pool[int(rng.integers(len(pool)))]
            kind, params = "compare", {"color": target.color, "shape": target.kind}
        else:
            scene = item.scenes[0]
            kind = SINGLE_KINDS[int(rng.integers(len(SINGLE_KINDS)))]
            if kind == "locate":
                cell = sorted(scene.cells)[int(rng.integers(len(scene.cells)))]
                params = {"color": scene.cells[cell].color, "shape": scene.cells[cell].kind}
            elif kind == "identify":
                params = {"row": int(rng.integers(1, ROWS + 1)), "column": int(rng.integers(1, COLS + 1))}
            elif kind == "count":
                params = {"shape": SHAPES[int(rng.integers(len(SHAPES)))]}
            else:
                params = {"row": int(rng.integers(1, ROWS + 1))}
        turns.append((question_for(kind, params), answer_for(kind, item.scenes, params)))
    return turns


def task_batch(
    rng: np.random.Generator,
    processor,
    kinds: tuple[str, ...],
    size: int,
    turns: int,
    ids: dict,
    image_questions: float = 0.5,
    max_images: int = 4,
):
    """A right-padded training batch, labels on every answer and its `<|im_end|>`.

    Each sample is a chat about one task's pictures: the task's own question first (exactly the
    single-turn prompt the model answers at inference), then `turns - 1` more questions about the
    same pictures, so one pass over the vision tokens trains several retrievals (2 to `max_images` pictures).
    """
    items = [make_task(kinds[int(rng.integers(len(kinds)))], rng, max_images=max_images) for _ in range(size)]
    chats = [[(item.question, item.answer), *more_questions(rng, item, turns - 1, image_questions)] for item in items]
    texts = processor.apply_chat_template(
        [conversation(chat, len(item.scenes)) for chat, item in zip(chats, items)], tokenize=False
    )
    images = [[scene.render() for scene in item.scenes] for item in items]
    batch = processor(text=texts, images=images, padding=True, padding_side="right", return_tensors="pt")
    ids_, mask = batch["input_ids"], batch["attention_mask"]
    # inside an answer: the last "assistant" token lies after the last <|im_end|> before this position
    positions = torch.arange(ids_.shape[1]).expand_as(ids_)
    last_open = torch.where(ids_ == ids["assistant"], positions, -1).cummax(dim=1).values
    last_close = torch.where(ids_ == ids["end"], positions, -1).cummax(dim=1).values
    last_close_before = torch.cat([torch.full_like(last_close[:, :1], -1), last_close[:, :-1]], dim=1)
    answer = (last_open > last_close_before) & (positions > last_open) & mask.bool()
    labels = torch.where(answer, ids_, -100)
    # the questions' words (after the pictures, outside answers, no chat tokens): most questions name
    # what the picture holds, so predicting their words is a grounded retrieval of its own
    last_image = torch.where(ids_ == ids["image"], positions, -1).amax(dim=1, keepdim=True)
    question = (positions > last_image) & ~answer & mask.bool() & (ids_ >= ids["first_word"])
    question_labels = torch.where(question, ids_, -100)
    return batch, labels, question_labels, [item.kind for item in items]


def cell_token_inputs(model, batch, labels: torch.Tensor, question_labels: torch.Tensor, image_id: int):
    """The batch with each grid cell as one vision token: the mean of its 3 x 3 patches' features.

    The same projected features as the real prompt, pooled per cell, so an image is 9 tokens instead
    of 81. Returns `(inputs_embeds, attention_mask, labels, question_labels)`, right-padded.
    """
    inner = model.model
    with torch.no_grad():
        features = torch.stack(inner.get_image_features(pixel_values=batch["pixel_values"]).pooler_output)
    cell = SIDE // ROWS
    pooled = features.view(-1, ROWS, cell, COLS, cell, features.shape[-1]).mean(dim=(2, 4)).flatten(1, 2)
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    is_image = ids == image_id
    index_in_image = (is_image.long().cumsum(dim=1) - 1) % (SIDE * SIDE)
    keep = mask & (~is_image | (index_in_image < ROWS * COLS))
    length = int(keep.sum(dim=1).max())
    rows = []
    for tensor, fill in ((ids, 0), (labels, -100), (question_labels, -100)):
        out = torch.full((ids.shape[0], length), fill, dtype=tensor.dtype)
        for b in range(ids.shape[0]):
            kept = tensor[b][keep[b]]
            out[b, : kept.numel()] = kept
        rows.append(out)
    new_ids, new_labels, new_questions = rows
    new_mask = torch.zeros_like(new_ids, dtype=torch.long)
    for b, count in enumerate(keep.sum(dim=1).tolist()):
        new_mask[b, :count] = 1
    embeds = inner.language_model.embed_tokens(new_ids)
    slots = new_ids == image_id
    embeds = embeds.masked_scatter(slots[..., None], pooled.reshape(-1, pooled.shape[-1]).to(embeds.dtype))
    return embeds, new_mask, new_labels, new_questions


def lr_at(step: int, args) -> float:
    if step <= args.warmup:
        return args.lr * step / args.warmup
    progress = (step - args.warmup) / max(1, args.decoder_steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_decoder(model, processor, args, rng: np.random.Generator) -> list[dict]:
    inner = model.model
    for module in (inner.vision_tower, inner.multi_modal_projector):
        module.requires_grad_(False)
    with torch.no_grad():
        inner.language_model.embed_tokens.weight.normal_(0.0, 1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    ids = {
        name: processor.tokenizer.convert_tokens_to_ids(token)
        for name, token in (("assistant", "assistant"), ("end", "<|im_end|>"), ("image", "<image>"))
    }
    ids["first_word"] = len(SPECIAL_TOKENS) + len(ROLE_WORDS)  # task words follow the chat tokens
    model.train()
    history, window = [], []
    started = time.perf_counter()
    last_step = min(args.decoder_steps, args.stop_after or args.decoder_steps)
    for step in range(1, last_step + 1):
        multi = step % args.multi_every == 0
        kinds, size = (("compare",), args.batch // 2) if multi else (SINGLE_KINDS, args.batch)
        batch, labels, question_labels, batch_kinds = task_batch(
            rng, processor, kinds, size, args.turns, ids, args.image_questions
        )
        if step <= args.cell_steps:  # curriculum: cells as tokens first (see cell_token_inputs)
            embeds, mask, labels, question_labels = cell_token_inputs(
                model, batch, labels, question_labels, ids["image"]
            )
            hidden = inner.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        else:
            hidden = inner(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
            ).last_hidden_state
        logits = model.lm_head(hidden[:, :-1])
        targets = labels[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        if args.question_loss:
            questions = question_labels[:, 1:].flatten()
            loss = loss + args.question_loss * F.cross_entropy(logits.flatten(0, 1), questions, ignore_index=-100)
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
        for kind, ok in zip(batch_kinds, correct.tolist()):
            window.append((kind, ok, loss.item()))
        if step % args.log_every == 0 or step == last_step:
            per_kind = {k: np.mean([ok for kind, ok, _ in window if kind == k]) for k in KINDS}
            per_kind = {k: round(float(v), 3) for k, v in per_kind.items() if not np.isnan(v)}
            mean_loss = float(np.mean([value for *_, value in window]))
            elapsed = time.perf_counter() - started
            log(
                f"decoder {step}/{args.decoder_steps} loss {mean_loss:.4f} teacher-forced exact {per_kind} ({elapsed / step:.2f} s/step)"
            )
            history.append({"step": step, "loss": mean_loss, "teacher_forced_exact": per_kind})
            window = []
        if args.checkpoint and step % args.log_every == 0:
            torch.save(model.state_dict(), args.checkpoint)  # for probing a run in progress
        if args.eval_every and step % args.eval_every == 0 and step < last_step:
            model.eval()
            log(f"held-out at step {step}: {evaluate(model, processor, args.eval_every_items, args)['per_kind']}")
            model.train()
    model.eval()
    return history


# -- evaluation ------------------------------------------------------------------------------------


@torch.inference_mode()
def evaluate(model, processor, num_items: int, args) -> dict:
    """Exact match of greedy `generate()` on the held-out split, per kind, single and multi-image."""
    from plphp.backends.inputs import chat_inputs

    items = make_tasks(num_items, seed=0, split="test", layout=getattr(args, "layout", "cell"))
    records = []
    for start in range(0, len(items), args.eval_batch):
        chunk = items[start : start + args.eval_batch]
        inputs = chat_inputs(processor, [(item.question, item.images()) for item in chunk])
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for item, answer in zip(chunk, answers):
            records.append(
                {
                    "kind": item.kind,
                    "exact": exact_match(answer, item.answer),
                    "token_accuracy": token_accuracy(answer, item.answer),
                }
            )

    def mean(rows, key="exact"):
        return round(float(np.mean([row[key] for row in rows])), 4) if rows else float("nan")

    return {
        "items": len(records),
        "exact_match": mean(records),
        "single_image": mean([r for r in records if r["kind"] != "compare"]),
        "multi_image": mean([r for r in records if r["kind"] == "compare"]),
        "per_kind": {kind: mean([r for r in records if r["kind"] == kind]) for kind in KINDS},
        "token_accuracy": mean(records, "token_accuracy"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model and processor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the result depends on it)")
    parser.add_argument("--vision-steps", type=int, default=400)
    parser.add_argument("--vision-batch", type=int, default=32)
    parser.add_argument("--vision-lr", type=float, default=3e-3)
    parser.add_argument("--decoder-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=48, help="single-image batch; multi-image batches are half")
    parser.add_argument("--multi-every", type=int, default=3, help="every N-th decoder batch is multi-image")
    parser.add_argument(
        "--image-questions", type=float, default=0.5, help="share of multi-image follow-ups about one named picture"
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="end after this decoder step (the schedule still spans --decoder-steps)",
    )
    parser.add_argument("--turns", type=int, default=1, help="questions per chat about the same pictures")
    parser.add_argument("--cell-steps", type=int, default=0, help="first decoder steps with one token per cell")
    parser.add_argument("--question-loss", type=float, default=0.0, help="weight of the loss on question words")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--init-std", type=float, default=0.02, help="std of the language model's initial weights (transformers: 0.02)"
    )
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=0, help="held-out check every N decoder steps (0: never)")
    parser.add_argument("--eval-every-items", type=int, default=100)
    parser.add_argument("--eval-items", type=int, default=500, help="held-out items of the final evaluation")
    parser.add_argument("--eval-batch", type=int, default=25)
    parser.add_argument("--checkpoint", type=Path, default=None, help="state dict written every --log-every steps")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data_rng = np.random.default_rng([args.seed, 7])
    processor = build_grid_processor()
    config = build_grid_config(initializer_range=args.init_std)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa")
    model.generation_config = grid_generation_config()
    log(f"grid model: {model.num_parameters() / 1e6:.2f} M parameters, {args.threads} thread(s), seed {args.seed}")
    started = time.perf_counter()
    vision = train_vision(model, processor, args, data_rng)
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
        "command": " ".join(["python", "training/train_grid_model.py", *(argv if argv is not None else sys.argv[1:])]),
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
