"""`FitTable`: drawn whole where it fits, wrapped at spaces (never a cut word) narrower, one block per
row narrower still."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from plphp.tables import FitTable


def render(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def table() -> FitTable:
    t = FitTable(title="figures", caption="a caption")
    t.add_column("policy", no_wrap=True)
    t.add_column("what it does")
    t.add_column("exact", justify="right")
    t.add_row("plphp-question", "vision-attention tiers per layer, per-head top-k per image", "66.0% (52–78)")
    t.add_row("", "continued on a second row", "")
    t.add_row("full", "keeps every token", "79.2% (66–88)")
    return t


def test_a_table_that_fits_is_drawn_as_rich_draws_it():
    from rich.table import Table

    plain = Table(title="figures", caption="a caption")
    fitted = table()
    for column in fitted.columns:
        plain.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap)
    for row in zip(*(column.cells for column in fitted.columns)):
        plain.add_row(*row)
    assert render(fitted, 140) == render(plain, 140)
    assert "│ plphp-question │ vision-attention tiers per layer, per-head top-k per image │" in render(fitted, 140)


@pytest.mark.parametrize("width", range(20, 141, 3))
def test_no_cell_is_ever_cut_and_the_names_stay_whole(width):
    out = render(table(), width)
    assert "…" not in out
    assert "plphp-question" in out and "full" in out
    assert max(len(line) for line in out.splitlines()) <= width
    words = " ".join(out.replace("│", " ").replace("┃", " ").split())
    for word in ("vision-attention", "per-head", "(52–78)", "(66–88)", "66.0%", "exact"):
        assert word in words, (width, word)
    assert "what it does" in out or "│" in out  # a block's header, whole, or a table's (which may wrap)


def test_narrower_it_wraps_at_spaces_and_keeps_the_borders():
    out = render(table(), 60)
    assert "│ plphp-question │" in out  # a table still, its name column whole
    assert max(len(line) for line in out.splitlines()) <= 60
    assert "vision-attention tiers per layer, per-head" not in out  # that cell wrapped


def test_narrower_still_each_row_is_a_block_and_continuation_rows_join_it():
    out = render(table(), 36)
    assert "│" not in out
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[0] == "figures"
    start = lines.index("plphp-question")
    assert lines[start + 1].startswith("  what it does  vision-attention")
    assert start < next(i for i, line in enumerate(lines) if "continued on" in line) < lines.index("full")
    assert lines[lines.index("full") + 1].startswith("  what it does  keeps every token")
    assert lines[-1] == "a caption"


def test_name_blocks_heads_each_block_with_the_first_header():
    t = FitTable(name_blocks=True)
    for column in ("layer", "a long header", "another long header", "and one more"):
        t.add_column(column)
    t.add_row("3", "0.1, 0.2, 0.3, 0.4", "1.0, 1.0, 1.0, 1.0", "12/40, 30/100")
    out = render(t, 24)
    assert out.splitlines()[0].strip() == "layer 3"


def test_an_empty_table_is_drawn_as_usual():
    t = FitTable(title="nothing")
    t.add_column("policy")
    assert "policy" in render(t, 40)


def test_the_pruning_report_and_the_bench_table_stay_whole_at_80_columns():
    import torch

    from plphp.bench.output import rich_table
    from plphp.report import LayerReport, PruningReport

    batch = 4
    layers = [
        LayerReport(i, i >= 2, torch.full((batch,), 0.3), [30, 45, 12, 100], torch.full((batch, 2), 30), None,
                    torch.rand(batch), 987_654, 523_456, 300)
        for i in range(3)
    ]  # fmt: skip
    report = PruningReport("plphp: tiers per layer, top-k per head", "decode", batch, 400, [100, 150, 40, 333], layers)
    out = render(report.table(), 80)
    assert "…" not in out and "│" in out  # still a table at 80 columns
    for header in ("layer", "retention", "kept / vision", "KV before", "KV after"):
        assert header in out
    assert "964.5 KiB" in out and "511.2 KiB" in out
    spread = {"median": 0.0123, "min": 0.0119, "max": 0.0131}
    row = {
        "label": "plphp-question", "step_s": spread, "tokens_per_s": {"median": 81.2, "min": 76.3, "max": 84.0},
        "prefill_s": spread, "ttft_s": spread, "compress_s": None, "kv_bytes": 12.5 * 2**20,
        "peak_decode": {"median": 3e8, "min": 2.9e8, "max": 3.1e8}, "speedup": 1.23, "speedup_paired_median": 1.21,
        "ideal_speedup": 1.4, "of_ideal": 0.88, "floor_step_s": 0.004,
    }  # fmt: skip
    out = render(rich_table([row], "plphp bench", "median (min–max)"), 80)
    assert "…" not in out and "plphp-question" in out.splitlines()
    for header in ("decode ms/step", "tokens/s", "peak decode MiB", "ideal (BW model)", "floor ms/step"):
        assert f"  {header}  " in out, header
    assert "12.3 (11.9–13.1)" in out


def test_the_room_left_first_makes_whole_the_columns_that_need_least():
    from rich.measure import Measurement

    from plphp.tables import _share

    ranges = [Measurement(14, 14), Measurement(7, 13), Measurement(7, 13), Measurement(5, 7)]
    # 9 to share: the last column needs 2 to be whole, the middle ones 6 each; one of those gets 6.
    assert _share(ranges, [False, True, True, True], 14 + 7 + 7 + 5 + 9) == [14, 13, 8, 7]
    assert _share(ranges, [False, True, True, True], 100) == [14, 13, 13, 7]  # never beyond natural width
    assert _share(ranges, [False, True, True, True], 33) == [14, 7, 7, 5]
