"""Linear probes on a grid model v2's hidden states at the answer position of `compare` prompts.

Why `compare` is not learnt: for each layer, a logistic regression on the last prompt token's
hidden state (where the first answer word is predicted) is fitted on 900 two-picture prompts of
the `train` split and scored on 300 more, for four facts: the asked colour is red (read from the
question), the asked shape is in the first picture, in the second, and in either (the answer is not
`none`). A fact the first answer word needs but no layer's state holds linearly is one the model
does not compute there. Deterministic; about a minute on one thread.

Usage:
    python training/probe_compare_v2.py                      # the shipped v2
    python training/probe_compare_v2.py --model /tmp/g15/d   # any v2 directory
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from plphp.backends.inputs import chat_inputs
from plphp.models.grid_v2 import load_grid_v2_model
from plphp.tasks import Shape, make_tasks

FACTS = ("asks_red", "in_first", "in_second", "in_either")


@torch.no_grad()
def answer_states(model, processor, items, batch: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """[L + 1, N, D] last prompt token's hidden states and [N, 4] float facts (`FACTS`)."""
    states, facts = [], []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        inputs = chat_inputs(processor, [(item.question, item.images()) for item in chunk])  # left-padded
        states.append(torch.stack(model(**inputs, output_hidden_states=True).hidden_states)[:, :, -1])
        for item in chunk:
            target = Shape(item.params["color"], item.params["shape"])
            first, second = (bool(scene.find(target)) for scene in item.scenes)
            facts.append([target.color == "red", first, second, first or second])
    return torch.cat(states, dim=1), torch.tensor(facts, dtype=torch.float)


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, train: int, steps: int = 300) -> float:
    """Held-out accuracy of an L2-regularised logistic regression fitted on the first `train` rows."""
    mean, std = features[:train].mean(0), features[:train].std(0) + 1e-5
    features = (features - mean) / std
    weight = torch.zeros(features.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = features[:train] @ weight + bias
        loss = F.binary_cross_entropy_with_logits(logits, labels[:train]) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(((features[train:] @ weight + bias > 0).float() == labels[train:]).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="v2 directory (default: the shipped one)")
    parser.add_argument("--items", type=int, default=1200)
    parser.add_argument("--train-items", type=int, default=900)
    args = parser.parse_args(argv)
    if not 0 < args.train_items < args.items:
        parser.error(f"--train-items: {args.train_items} is not allowed; use 1 to {args.items - 1} (below --items)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, processor = load_grid_v2_model(args.model)
    model.eval()
    items = make_tasks(args.items, seed=3, split="train", kinds=["compare"], max_images=2)
    states, facts = answer_states(model, processor, items)
    held_out = facts[args.train_items :]
    result = {}
    for column, fact in enumerate(FACTS):
        share = float(held_out[:, column].mean())
        per_layer = [round(probe_accuracy(layer, facts[:, column], args.train_items), 3) for layer in states]
        result[fact] = {"majority": round(max(share, 1 - share), 3), "per_layer": per_layer}
        print(f"{fact:10s} majority {result[fact]['majority']:.2f}  layers 0..{len(per_layer) - 1}: {per_layer}")
    print(json.dumps({"model": str(args.model or "shipped"), "probes": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
