"""`run_inspect`: run policies over items, and write the figures, `inspect.json` and `index.html`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from plphp.errors import ConfigError
from plphp.evaluation.dataset import EvalItem
from plphp.inspect import figures as draw
from plphp.inspect import summary
from plphp.inspect.collect import ItemRun, inspect_item
from plphp.inspect.page import write_page
from plphp.inspect.patches import draw_kept_patches, patch_panels
from plphp.policy import Policy, load_policy
from plphp.registry import get_registry

#: The JSON's sections, one per figure, and the per-item reports.
SECTIONS = ("policies", "vision_attention", "retention", "kept_patches", "recall", "head_diversity", "reports")


@dataclass
class InspectSettings:
    """What `run_inspect` measures.

    Attributes:
        layers: layers of the kept-patch pictures and head × head matrices (default: the first
            policy's most pruned layer).
        recall_tokens: unpruned decoding steps over which recall is measured (0: no recall).
    """

    layers: Sequence[int] | None = None
    recall_tokens: int = 8


def load_policies(specs: Sequence[str] | None) -> dict[str, Policy]:
    """The policies by name (default: plphp); two with one name are refused."""
    out: dict[str, Policy] = {}
    for spec in specs or ["plphp"]:
        policy = load_policy(spec)
        if policy.name in out:
            raise ConfigError(
                f"--policy: two policies are named {policy.name!r}; give each policy file a distinct name"
            )
        out[policy.name] = policy
    return out


def check_layers(layers: Sequence[int] | None, num_layers: int, what: str = "the model") -> None:
    """Refuse a `--layer` the model does not have, naming the allowed range."""
    for layer in layers or []:
        if not 0 <= layer < num_layers:
            raise ConfigError(
                f"--layer: {layer} is not a layer of {what}, which has {num_layers} decoder layers; "
                f"allowed are 0 to {num_layers - 1}"
            )


def run_inspect(
    model: Any,
    processor: Any,
    items: Sequence[EvalItem],
    policies: Sequence[str] | None,
    out_dir: str | Path,
    *,
    settings: InspectSettings | None = None,
    run_info: dict[str, str] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Inspect `policies` (default plphp) on `items`; write the PNGs, `inspect.json` and `index.html`
    to `out_dir` and return the JSON's data."""
    from plphp.backends.session import apply

    settings = settings or InspectSettings()
    console = console or Console()
    resolved = load_policies(policies)
    adapter = get_registry().adapter_for(model)
    check_layers(settings.layers, adapter.num_layers)
    for policy in resolved.values():
        apply(model, policy)  # refuses a layer range this model does not have, before anything runs
    if not items:
        raise ConfigError("no items to inspect")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {str(out)!r} is a file; give a folder")
    runs: list[ItemRun] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("inspecting", total=len(items))
        for item in items:
            runs.append(inspect_item(model, processor, item, resolved, recall_tokens=settings.recall_tokens))
            progress.advance(task)
    data = summarize(runs, resolved, adapter, settings, run_info or {})
    write_outputs(out, data, [run.images for run in runs[:1]])
    return data


def _most_pruned(runs: list[ItemRun], name: str, num_layers: int) -> int:
    rates = summary.retention(runs, name, num_layers)["mean"]
    reports = [run.runs[name].report for run in runs if run.runs[name].report is not None]
    pruned = [i for i in range(num_layers) if any(r.layers and r.layers[i].pruned for r in reports)]
    return min(pruned or range(num_layers), key=lambda i: (rates[i], i))


def summarize(
    runs: list[ItemRun], policies: dict[str, Policy], adapter: Any, settings: InspectSettings, run_info: dict
) -> dict[str, Any]:
    """The JSON data of every figure (`plphp.inspect.summary`)."""
    num_layers, names = adapter.num_layers, list(policies)
    infos = {name: summary.policy_info(policy, num_layers) for name, policy in policies.items()}
    layers = list(settings.layers or [_most_pruned(runs, names[0], num_layers)])
    layouts = [adapter.image_layouts(run.inputs) for run in runs]
    vision = [[p for positions, _ in sample for p in positions] for sample in (lay[0] for lay in layouts)]
    kept_patches = []
    first = runs[0]
    for name in names:
        report = first.runs[name].report
        for layer in layers:
            if report is not None and report.layers:
                panels = patch_panels(report, layouts[0], layer)
                kept_patches.append({"policy": name, "layer": layer, "item": first.item.id, "images": panels})
    counts = [len(v) for v in vision]
    return {
        "model": run_info.get("model", type(adapter.model).__name__),
        "dataset": run_info.get("dataset", ""),
        "items": [run.item.id for run in runs],
        "num_layers": num_layers,
        "num_heads": adapter.num_heads,
        "num_kv_heads": adapter.num_kv_heads,
        "mean_vision_tokens": sum(counts) / len(counts),
        "layers": layers,
        "policies": infos,
        "vision_attention": {n: summary.vision_attention(runs, n, infos[n], num_layers) for n in names},
        "retention": {n: summary.retention(runs, n, num_layers) for n in names},
        "kept_patches": kept_patches,
        "recall": {n: summary.recall(runs, n) for n in names},
        "head_diversity": summary.head_diversity(runs, names, vision, layers, num_layers, adapter.num_kv_heads),
        "reports": summary.item_reports(runs),
    }


def write_outputs(out: Path, data: dict[str, Any], pictures: list[list[Any]]) -> list[dict[str, str]]:
    """Draw every figure to `out`, then write `inspect.json` (with the figures' files) and `index.html`."""
    out.mkdir(parents=True, exist_ok=True)
    figures = []

    def save(fig: Any, file: str, title: str, caption: str) -> None:
        fig.savefig(out / file, dpi=100)
        figures.append({"file": file, "title": title, "caption": caption})

    save(draw.gamma_figure(data), "vision-attention.png", "Vision attention per layer", _gamma_caption(data))
    save(draw.retention_figure(data), "retention.png", "Retention and kept tokens", _retention_caption(data))
    for entry in data["kept_patches"]:
        title = f"{entry['policy']}, layer {entry['layer']}, item {entry['item']}: kept patches per KV head"
        fig = draw_kept_patches(entry["images"], pictures, title)
        save(
            fig,
            f"kept-patches-{_slug(entry['policy'])}-layer{entry['layer']}.png",
            f"Kept patches: {entry['policy']}, layer {entry['layer']}",
            "Each row is a KV head, each column an image (or tile) of the first item; kept patches bright, "
            "dropped ones dimmed. Tokens that are no patch (row newlines) are counted in the titles.",
        )
    save(draw.recall_figure(data), "recall.png", "Attention recall", _recall_caption(data))
    save(draw.diversity_figure(data), "head-diversity.png", "Head diversity", _diversity_caption(data))
    data["figures"] = figures
    (out / "inspect.json").write_text(json.dumps(summary.clean(data), indent=1), encoding="utf-8")
    write_page(out / "index.html", data, figures)
    return figures


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _gamma_caption(data: dict[str, Any]) -> str:
    parts = []
    for name, section in data["vision_attention"].items():
        if not section["measured"]:
            parts.append(f"{name}'s collector measures no vision attention.")
            continue
        tiers = {t: section["tier"].count(t) for t in summary.TIERS if section["tier"].count(t)}
        parts.append(f"{name}: " + ", ".join(f"{n} {t}" for t, n in tiers.items()) + " layer(s).")
    return (
        "γ: the share of the observation queries' attention on vision tokens, per layer (mean over items; "
        "band: the heads' 10-90 % over heads and items). Dashed: α, dash-dot: β; points coloured by tier. "
        + " ".join(parts)
    )


def _retention_caption(data: dict[str, Any]) -> str:
    parts = []
    for name, section in data["retention"].items():
        kept = [f for f in section["kept_fraction"] if f is not None and not math.isnan(f)]
        parts.append(f"{name} keeps {sum(kept) / len(kept):.0%} of the vision tokens on average." if kept else "")
    return "Retention per layer and the vision tokens each KV head keeps (mean over items). " + " ".join(parts)


def _recall_caption(data: dict[str, Any]) -> str:
    measured = {n: s for n, s in data["recall"].items() if s is not None}
    if not measured:
        return "No recall: nothing was pruned, or recall was switched off."
    return (
        "The share of unpruned decoding attention that falls on the entries each policy keeps, per layer and "
        "query head (1.0: nothing dropped is looked at). "
        + " ".join(f"{n}: {_mean(s['layers']):.3f} overall." for n, s in measured.items())
    )


def _diversity_caption(data: dict[str, Any]) -> str:
    within = data["head_diversity"]["within"]
    text = " ".join(f"{n}: {_mean(v):.2f} between heads." for n, v in within.items() if not math.isnan(_mean(v)))
    return (
        "Jaccard overlap |A∩B|/|A∪B| of the keep-sets of a layer's KV heads (1.0: every head keeps the same "
        "tokens), per pruned layer, and between policies for the same head; right: heads × heads for the chosen "
        "layer(s). " + text
    )


def _mean(values: list[Any]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
