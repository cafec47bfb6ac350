"""The one output path: an Arrow table out as a rich table (people), CSV or JSON (machines).

Table and CSV agree cell for cell (same column order, same formatting of values); JSON keeps
native types (numbers stay numbers, timestamps become ISO 8601 UTC strings ending in Z).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "csv", "json")
BAR_WIDTH = 24
PIPE_WIDTH = 200
_PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"


def cell_text(value: Any, tz: dt.tzinfo | None = None) -> str:
    """How a value reads in a table cell and a CSV field (times in `tz` when given, else UTC)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.1f}"
    if isinstance(value, dt.datetime):
        return iso_local(value, tz) if tz is not None else iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# C0 and C1 control characters and DEL, shown escaped in a terminal table (log fields are
# attacker-written: an escape sequence must not reach the terminal)
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def terminal_text(cell: str) -> Text:
    """A cell for a rich table: never markup, control characters escaped."""
    return Text(cell.translate(_CONTROLS))


def iso_utc(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def iso_local(value: dt.datetime, tz: dt.tzinfo) -> str:
    """A time (naive values are UTC) in `tz`, ISO 8601 with its offset."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(tz).isoformat(timespec="seconds")


def bar_text(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `value` scaled so that `top` fills `width` characters."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(value / top * width * 8)
    full, part = divmod(max(eighths, 1), 8)
    return "█" * full + (_PARTIAL_BLOCKS[part] if part else "")


def json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()  # type: ignore[no-any-return]


@dataclass
class Section:
    """One table of a report, with what only the rich table shows."""

    table: pa.Table
    name: str = ""
    title: str | None = None
    # bar column header -> numeric column it draws (appended after the data columns; a picture
    # of a value already in the row, so the data cells still agree with CSV cell for cell)
    bars: Mapping[str, str] = field(default_factory=dict)


def render(
    table: pa.Table,
    fmt: str = "table",
    *,
    out: TextIO | None = None,
    title: str | None = None,
    single: bool = False,
    footer: Sequence[str] = (),
    console: Console | None = None,
    bars: Mapping[str, str] | None = None,
    tz: dt.tzinfo | None = None,
) -> None:
    """Write `table` to `out` (stdout) in `fmt`.

    single: the table holds one object (a one-delivery report): JSON prints an object and the
    rich table shows it as field | value rows.
    footer: lines printed under the rich table only (on CSV/JSON they would corrupt the data).
    bars: bar columns of the rich table (see Section).
    tz: show times in this zone in the table and CSV; JSON always carries UTC.
    """
    section = Section(table, title=title, bars=bars or {})
    render_sections([section], fmt, out=out, single=single, footer=footer, console=console, tz=tz)


def render_sections(
    sections: Sequence[Section],
    fmt: str = "table",
    *,
    out: TextIO | None = None,
    single: bool = False,
    footer: Sequence[str] = (),
    console: Console | None = None,
    tz: dt.tzinfo | None = None,
) -> None:
    """Write a report made of one or more tables.

    More than one: JSON prints an object {name: [rows...]}, CSV the tables one after the other
    separated by an empty line, the rich output one table after the other.
    """
    out = out if out is not None else sys.stdout
    if fmt == "json":
        out.write(json.dumps(_json_data(sections, single), ensure_ascii=False, indent=2) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        for i, section in enumerate(sections):
            if i:
                out.write("\n")
            writer.writerow(section.table.column_names)
            for r in rows_of(section.table):
                writer.writerow([cell_text(v, tz) for v in r.values()])
        return
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    console = console or Console(file=out, highlight=False, soft_wrap=False, width=_width(out))
    for section in sections:
        console.print(_transposed(section, tz) if single else _rich_table(section, tz))
    for line in footer:
        console.print(line)


def _width(out: TextIO) -> int | None:
    """The terminal's width on a terminal; else wide enough that piped tables do not fold."""
    isatty = getattr(out, "isatty", None)
    return None if isatty is not None and isatty() else PIPE_WIDTH


def _json_data(sections: Sequence[Section], single: bool) -> Any:
    lists = [[{k: json_value(v) for k, v in r.items()} for r in rows_of(s.table)] for s in sections]
    if len(sections) > 1:
        return {s.name: rows for s, rows in zip(sections, lists, strict=True)}
    if single:
        return lists[0][0] if lists[0] else {}
    return lists[0]


def _is_numeric(type_: pa.DataType) -> bool:
    return bool(pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_))


def _rich_table(section: Section, tz: dt.tzinfo | None) -> Table:
    table = section.table
    numeric = {f.name for f in table.schema if _is_numeric(f.type)}
    rt = Table(title=section.title, show_lines=False, header_style="bold")
    for name in table.column_names:
        rt.add_column(name, justify="right" if name in numeric else "left", overflow="fold")
    tops = {}
    for header, source in section.bars.items():
        rt.add_column(header, justify="left", no_wrap=True, style="cyan")
        values = [v for v in table.column(source).to_pylist() if v is not None]
        tops[header] = float(max(values, default=0))
    for r in rows_of(table):
        cells = [terminal_text(cell_text(v, tz)) for v in r.values()]
        cells += [Text(bar_text(float(r[src] or 0), tops[h])) for h, src in section.bars.items()]
        rt.add_row(*cells)
    return rt


def _transposed(section: Section, tz: dt.tzinfo | None) -> Table:
    rt = Table(title=section.title, show_lines=False, header_style="bold")
    rt.add_column("field", justify="left")
    rt.add_column("value", justify="right", overflow="fold")
    rows = rows_of(section.table)
    for name in section.table.column_names:
        rt.add_row(name, terminal_text(cell_text(rows[0][name], tz) if rows else ""))
    return rt
