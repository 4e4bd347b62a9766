"""`plphp eval`'s outputs: tables whole at 80 columns and in a pipe, the plot (a legend, error bars,
exact match on a panel of its own), results.json's new figures, and the "resuming" line."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from rich.console import Console

from plphp.evaluation.plot import _dodges
from plphp.evaluation.summary import summarize, summary_table

from .test_stats import _record

NAMES = ["full", "plphp", "plphp-question", "random", "plphp-window32"]
HEADERS = ("policy", "items", "exact", "per token", "= full", "Δ exact", "p")
COST_HEADERS = ("KV/item", "KV kept", "vision kept", "recall", "ms/token")


def _summary(names=NAMES) -> dict:
    records = []
    for offset, name in enumerate(names):
        for i in range(20):
            right = (i + offset) % 3 != 0 if name != "full" else i % 4 != 0
            records.append(_record(name, i, right, "right" if right else f"wrong {name}"))
    return summarize(records, names)


def render(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _header_lines(out: str) -> str:
    """The header rows of each table (between ┏ and ┡), joined column by column."""
    rows = []
    for block in re.findall(r"┏[^\n]*\n(.*?)┡", out, re.S):
        lines = [line.strip("┃").split("┃") for line in block.strip().splitlines()]
        rows.extend(" ".join(" ".join(cell.split()) for cell in column).strip() for column in zip(*lines))
    return rows


def _check(out: str, width: int) -> None:
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    for name in NAMES:
        assert re.search(rf"│ {re.escape(name)}\s+│", out), name
    headers = _header_lines(out)
    for header in (*HEADERS, *COST_HEADERS):
        assert header in headers, (header, headers)


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_eval_tables_keep_names_and_headers_whole(width):
    out = render(summary_table(_summary()), width)
    _check(out, width)
    assert re.search(r"│ full\s+│\s+20 │\s+75\.0%", out)  # 15 of 20 right
    assert "(" in out and "–" in out  # intervals


def test_a_long_policy_name_stays_whole_at_80_columns():
    names = ["full", "configs/plphp-window-32-retention-0.15.yaml"]
    out = render(summary_table(_summary(names)), 80)
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert names[1] in out


def test_a_very_narrow_terminal_lists_each_policy():
    out = render(summary_table(_summary()), 44)
    assert "…" not in out and "│" not in out
    lines = [line.rstrip() for line in out.splitlines()]
    for name in NAMES:
        assert name in lines
    assert any(line.strip().startswith("exact") and "%" in line for line in lines)


def test_the_plot_has_a_legend_error_bars_and_a_panel_per_accuracy(tmp_path):
    script = (
        "import json, sys\n"
        "from plphp.evaluation.plot import plot_summary\n"
        f"summary = json.loads({json.dumps(json.dumps(_summary()))})\n"
        f"plot_summary(summary, {str(tmp_path / 'eval.png')!r}, title='t')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "import matplotlib\n"
        "assert matplotlib.rcParams._get_backend_or_none() is None\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_s_artists(monkeypatch, tmp_path):
    from matplotlib.figure import Figure

    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    from plphp.evaluation.plot import plot_summary

    plot_summary(_summary(), tmp_path / "eval.png")
    (figure,) = figures
    exact, token, recall, layers = figure.axes
    assert exact.get_ylabel() == "exact match" and token.get_ylabel() == "per-token accuracy"
    assert not exact.texts and not token.texts and not recall.texts  # no text labels on the points
    assert len(exact.containers) == len(NAMES) and all(c.has_yerr for c in exact.containers)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == NAMES


def test_close_policies_are_set_side_by_side():
    assert _dodges([1.0, 0.607, 0.543, 0.609, 0.39]) == [0.0, -3.5, 0.0, 3.5, 0.0]
    assert _dodges([0.5, 0.5, 0.5]) == [-7.0, 0.0, 7.0]


def _cli(*args, cwd):
    env = {"COLUMNS": "80", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "plphp", "eval", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_the_command_at_80_columns_resumes_saying_how_much_is_done(tmp_path):
    args = ["--num-items", "4", "--batch-size", "2", "--max-new-tokens", "6", "--no-recall", "--out", "out"]
    first = _cli(*args, "-p", "full", "-p", "plphp", cwd=tmp_path)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "resuming" not in first.stdout
    assert "…" not in first.stdout and "│ full " in first.stdout and "│ plphp " in first.stdout
    headers = _header_lines(first.stdout)
    for header in (*HEADERS, *COST_HEADERS):
        assert header in headers, (header, headers)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    plphp = results["policies"]["plphp"]
    assert len(plphp["exact_match_ci"]) == 2 and len(plphp["token_accuracy_ci"]) == 2
    assert set(plphp["vs_full"]) == {
        "items",
        "changed",
        "exact_match_diff",
        "exact_match_diff_ci",
        "full_only",
        "policy_only",
        "mcnemar_p",
    }
    assert results["settings"]["bootstrap"] == {"resamples": 1000, "level": 0.95, "seed": 0, "over": "items"}
    again = _cli(*args, "-p", "full", "-p", "plphp", "-p", "random", cwd=tmp_path)
    assert again.returncode == 0, again.stderr + again.stdout
    message = " ".join(again.stdout.split())
    assert "resuming: 8 of 12 done (3 policies × 4 items, from out/items.jsonl)" in message
