"""`FitTable`: a rich `Table` that stays readable at any width and in a pipe.

Rich shrinks a table that is too wide by narrowing its widest columns evenly, then cutting every
cell to "…": at 80 columns a ten-column table reads "poli…", "100.…". A `FitTable` is drawn

1. as it is where it fits;
2. narrower, with each column at least as wide as its longest word (and its `min_width`) and the
   room left shared among the columns that wrap: cells wrap at spaces, no word is cut;
3. narrower still, as one block per row: the first cell, then `header  value` lines. A row whose
   first cell is empty continues the block above.

It is a `Table` in every other respect (`add_column`, `add_row`, `columns`, title and caption).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

#: Width used to measure a table's natural (unwrapped) size.
_UNBOUNDED = 100_000


class FitTable(Table):
    """A `Table` that wraps at word boundaries, or turns into one block per row, rather than cut cells.

    Args:
        name_blocks: head each block with the first column's header too ("layer 3", not "3").
        *args, **kwargs: those of `rich.table.Table`.
    """

    def __init__(self, *args: Any, name_blocks: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.name_blocks = name_blocks

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if not self.columns or not self.row_count:
            yield from super().__rich_console__(console, options)
            return
        # `_measure_column` counts the header, the cells, the padding and `min_width`; `_extra_width` the borders.
        wide = options.update_width(_UNBOUNDED)
        ranges = [self._measure_column(console, wide, column) for column in self.columns]
        extra = self._extra_width
        if sum(r.maximum for r in ranges) + extra <= width:
            yield from super().__rich_console__(console, options)
        elif sum(r.minimum for r in ranges) + extra <= width:
            widths = _share(ranges, [not c.no_wrap for c in self.columns], width - extra)
            narrow = copy.copy(self)
            narrow.columns = []
            for column, column_width in zip(self.columns, widths):
                column = copy.copy(column)
                column.width = column_width - self._get_padding_width(column._index)
                narrow.columns.append(column)
            yield from Table.__rich_console__(narrow, console, options)
        else:
            yield from self._blocks(console, options)

    def _blocks(self, console: Console, options: ConsoleOptions) -> Iterable[Any]:
        """One block per row (rows with an empty first cell join the block above): the first cell,
        then `header  value` lines; where even those do not fit, each header above its value."""
        headers = [_plain(console, column.header) or " " for column in self.columns]
        cells = [list(column.cells) for column in self.columns]
        blocks: list[tuple[Any, list[tuple[str, Any]]]] = []
        for row in range(self.row_count):
            key = cells[0][row]
            if _plain(console, key).strip() or not blocks:
                heading = f"{headers[0]} {_plain(console, key)}" if self.name_blocks else key
                blocks.append((heading, []))
            for index in range(1, len(self.columns)):
                if _plain(console, cells[index][row]).strip():
                    blocks[-1][1].append((headers[index], cells[index][row]))
        pairs = [pair for _, block in blocks for pair in block]
        header_width = max((len(header) for header, _ in pairs), default=0)
        word = max((Measurement.get(console, options, value).minimum for _, value in pairs), default=0)
        side_by_side = 2 + header_width + 2 + word <= options.max_width
        if self.title:
            yield _styled(console, self.title, "bold")
        for heading, block in blocks:
            yield _styled(console, heading, "bold")
            if side_by_side:
                grid = Table.grid(padding=(0, 2, 0, 0))
                grid.add_column(style="dim", no_wrap=True)
                grid.add_column(overflow="fold")
                for header, value in block:
                    grid.add_row(header, value)
                yield Padding(grid, (0, 0, 0, 2), expand=False)
                continue
            for header, value in block:
                yield Padding(Text(header, style="dim"), (0, 0, 0, 2), expand=False)
                yield Padding(value, (0, 0, 0, 4), expand=False)
        if self.caption:
            yield _styled(console, self.caption, "dim")


def _share(ranges: list[Any], wrapable: list[bool], total: int) -> list[int]:
    """Column widths summing to at most `total`: each column its minimum; then the room left goes to
    the columns that need the least to be whole (unwrapped), as long as it lasts; what remains, a
    character at a time, to the column that would take the most lines (its natural width over its
    width)."""
    widths = [r.minimum if wraps else r.maximum for r, wraps in zip(ranges, wrapable)]
    spare = total - sum(widths)
    for need, index in sorted((r.maximum - w, i) for i, (r, w) in enumerate(zip(ranges, widths)) if w < r.maximum):
        if need > spare:
            break
        widths[index] += need
        spare -= need
    while spare > 0:
        short = [(r.maximum / w, -i) for i, (r, w) in enumerate(zip(ranges, widths)) if w < r.maximum]
        if not short:
            break
        widths[-max(short)[1]] += 1
        spare -= 1
    return widths


def _plain(console: Console, renderable: Any) -> str:
    if isinstance(renderable, Text):
        return renderable.plain
    if isinstance(renderable, str):
        return console.render_str(renderable).plain
    return " "  # another renderable: not empty


def _styled(console: Console, renderable: Any, style: str) -> Any:
    if isinstance(renderable, str):
        text = console.render_str(renderable)
        text.stylize(style)
        return text
    return renderable
