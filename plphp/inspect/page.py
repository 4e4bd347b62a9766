"""`index.html` of `plphp inspect`: one self-contained page (pictures as base64 data URIs, inline
style, no script, nothing fetched from another host) showing every figure with a short caption."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "figure{margin:2em 0}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}"
    "code{background:#f3f3f3;padding:0 .2em}table{border-collapse:collapse;font-size:.9em}"
    "td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}"
)


def write_page(path: Path, data: dict[str, Any], figures: list[dict[str, str]]) -> Path:
    """Write the page.

    Args:
        path: the HTML file.
        data: the inspect data (model, dataset, policies, items).
        figures: per figure, `file` (a PNG next to the page), `title` and `caption`.
    """
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(info['description'])}</td></tr>"
        for name, info in data["policies"].items()
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>plphp inspect</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>plphp inspect</h1>",
        f"<p><b>model:</b> {html.escape(str(data['model']))}<br><b>inputs:</b> {html.escape(str(data['dataset']))}"
        f" ({len(data['items'])} item(s))</p>",
        f"<table><tr><th>policy</th><th>description</th></tr>{rows}</table>",
    ]
    for figure in figures:
        encoded = base64.b64encode((path.parent / figure["file"]).read_bytes()).decode("ascii")
        parts.append(
            f"<figure id='{html.escape(Path(figure['file']).stem)}'><h2>{html.escape(figure['title'])}</h2>"
            f"<img src='data:image/png;base64,{encoded}' alt='{html.escape(figure['title'])}'"
            f" data-file='{html.escape(figure['file'])}'>"
            f"<figcaption>{html.escape(figure['caption'])} <i>({html.escape(figure['file'])})</i></figcaption>"
            "</figure>"
        )
    parts.append("<p>Every figure's data is in <code>inspect.json</code>.</p></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
