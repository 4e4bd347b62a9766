"""Draws docs/img/data-flow.svg, the data-flow diagram of docs/concepts.md (a static SVG: the docs
site loads no diagram script from another host). Run `python docs/img/data-flow.py` after editing
STEPS; tests/test_docs_offline.py checks the SVG is up to date."""

from __future__ import annotations

from html import escape
from pathlib import Path

#: (box text lines, label of the arrow into the next box)
STEPS = [
    (["model.generate(...) starts prefill"], ""),
    (
        [
            "forward pre-hook: a PrunableLayer per decoder layer;",
            "vision positions and images from the adapter → PromptInfo",
        ],
        "",
    ),
    (
        ["plphp attention function (wraps sdpa / eager / flash),", "called by every decoder layer"],
        "post-RoPE query, key",
    ),
    (["collector → LayerStats of each layer", "(checked: plphp.contract.check_stats)"], "after the last layer"),
    (["forward hook: end of prefill"], ""),
    (["allocator: retention [num_layers, B]", "(1.0 outside start_layer..end_layer)"], ""),
    (["selector, per pruned layer: kept vision positions [B, H_kv, k]"], ""),
    (["cache compression: text + kept vision positions,", "gathered per KV head"], ""),
    (["decode: each layer has its own physical length;", "pruned layers attend with their own mask"], ""),
    (["session.report: PruningReport"], ""),
]

WIDTH, BOX_WIDTH, LINE, PAD, GAP = 640, 520, 18, 10, 34


def svg() -> str:
    parts, y = [], 10
    left = (WIDTH - BOX_WIDTH) // 2
    for index, (lines, label) in enumerate(STEPS):
        height = PAD * 2 + LINE * len(lines)
        parts.append(
            f'<rect x="{left}" y="{y}" width="{BOX_WIDTH}" height="{height}" rx="6" '
            'fill="#eef0fb" stroke="#3f51b5" stroke-width="1.2"/>'
        )
        for row, text in enumerate(lines):
            baseline = y + PAD + LINE * (row + 1) - 4
            parts.append(f'<text x="{WIDTH // 2}" y="{baseline}" text-anchor="middle">{escape(text)}</text>')
        y += height
        if index < len(STEPS) - 1:
            parts.append(
                f'<line x1="{WIDTH // 2}" y1="{y}" x2="{WIDTH // 2}" y2="{y + GAP - 4}" '
                'stroke="#3f51b5" stroke-width="1.2" marker-end="url(#arrow)"/>'
            )
            if label:
                parts.append(f'<text x="{WIDTH // 2 + 8}" y="{y + GAP // 2 + 4}" class="label">{escape(label)}</text>')
            y += GAP
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 10}" viewBox="0 0 {WIDTH} {y + 10}" '
        'font-family="sans-serif" font-size="13" role="img" aria-label="plphp data flow">\n'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#3f51b5"/></marker>'
        "<style>.label { font-size: 11px; fill: #555; font-style: italic; }</style></defs>\n"
        f'<rect width="{WIDTH}" height="{y + 10}" fill="white"/>\n'
    )
    return head + "\n".join(parts) + "\n</svg>\n"


OUT = Path(__file__).with_name("data-flow.svg")

if __name__ == "__main__":
    OUT.write_text(svg())
    print(f"wrote {OUT}")
