"""The one output path: a report's table (tracklog.result.Result, or an Arrow table) out as a rich
table (people), CSV or JSON (machines).

Table and CSV agree cell for cell (same column order, same formatting of values); JSON keeps
native types (numbers stay numbers, timestamps become ISO 8601 UTC strings ending in Z).
Every text reaching a terminal goes through `inert`: log and manifest text is never read as rich
markup (cells, titles and notes are `Text`, never markup strings) and control characters are
shown escaped (`\\x1b`), never emitted. Tables fit the terminal: see `_fit`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TextIO

from tracklog.result import Result

if TYPE_CHECKING:  # rich costs 30 ms to import: only where a table is printed; pyarrow never here
    import pyarrow as pa
    from rich.console import Console
    from rich.table import Table


FORMATS = ("table", "csv", "json")
BAR_WIDTH = 24
MIN_BAR_WIDTH = 8
PIPE_WIDTH = 200
_PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"

# C0 and C1 controls, DEL, and the bidirectional overrides and isolates (which reorder what a
# terminal shows): never written to a terminal, shown as a visible escape instead.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# Table headers for people; JSON and CSV keep the field names.
HEADERS: dict[str, str] = {
    "delivery": "Delivery",
    "delivery_id": "Delivery",
    "label": "Label",
    "subject": "Subject",
    "sent_at": "Sent at",
    "sent": "Sent",
    "delivered": "Delivered",
    "opens_total": "Opens",
    "opens_unique": "Opens (unique)",
    "clicks_total": "Clicks",
    "clicks_unique": "Clicks (unique)",
    "persons_clicked": "Persons clicked",
    "forwards_estimate": "Forwards (estimate)",
    "open_rate": "Open rate %",
    "click_rate": "Click rate %",
    "raw_reactivity": "Reactivity %",
    "mirror_views": "Mirror page views",
    "optout_clicks": "Opt-out link clicks",
    "unsubscribes": "Unsubscribes (one-click)",
    "rejected_hits": "Rejected hits",
    "failed_hits": "Failed hits",
    "machine_opens": "Machine opens",
    "bot_clicks": "Bot clicks",
    "position": "#",
    "link_id": "Link",
    "url": "URL",
    "clicks": "Clicks",
    "clickers": "Clickers",
    "share": "Share %",
    "opens": "Opens",
    "readers": "Readers",
    "deliveries": "Deliveries",
    "category": "Category",
    "sequence": "Sequence",
    "recipients": "Recipients",
    "from_link": "From",
    "from_label": "From label",
    "to_link": "To",
    "to_label": "To label",
    "count": "Times",
    "bucket": "Since send",
    "hours": "Hours",
    "metric": "Metric",
    "total": "Total",
    "hours_to_50": "Hours to 50%",
    "hours_to_80": "Hours to 80%",
    "hours_to_90": "Hours to 90%",
    "hours_to_95": "Hours to 95%",
    "browser": "Browser",
    "os": "OS",
    "device": "Device",
    "domain": "Domain",
    "ts": "Time",
    "type": "Event",
    "delivery_label": "Delivery label",
    "source_id": "Source",
    "path": "Path",
    "fingerprint": "Fingerprint",
    "fp_len": "Fingerprint bytes",
    "compressed": "gzip",
    "byte_offset": "Read up to byte",
    "lines": "Lines",
    "hits": "Hits",
    "ignored": "Ignored",
    "quarantined": "Quarantined",
    "log_format": "Log format",
    "last_ingest": "Last ingest",
    "reason": "Reason",
    "sig_status": "Signature",
    "links": "Links",
    "loaded_at": "Loaded at",
    "run_id": "Run",
    "started_at": "Started at",
    "finished_at": "Finished at",
    "files": "Files",
    "rejected": "Rejected",
    "errors": "Errors",
    "exit_code": "Exit code",
    "delivery_known": "Delivery known",
    "orphan_hits": "Orphan hits",
    "unknown_delivery": "Unknown delivery",
    "unknown_recipient": "Unknown recipient",
    "unknown_link": "Unknown link",
    "input": "Input",
    "status": "Status",
    "open": "Open hits",
    "click": "Click hits",
    "mirror": "Mirror hits",
    "unsubscribe": "Unsubscribe hits",
    "lines_per_s": "Lines/s",
    "stage": "Stage",
    "of_sent": "% of sent",
    "not_counted": "Not counted",
    "class": "Class",
    "reasons": "Reasons",
    "other": "Other hits",
    "agent": "Agent",
    "user_agent": "Agent",
    "network": "Network",
    "amount": "Amount",
    "currency": "Currency",
    "step": "Step",
    "rate": "Rate %",
    "of_delivered": "% of delivered",
    "page_views": "Page views",
    "visits": "Visits",
    "visitors": "Visitors",
    "pages_per_visitor": "Pages per visitor",
    "transactions": "Transactions",
    "items": "Items",
    "revenue": "Revenue",
    "revenue_per_delivered": "Revenue per delivered",
    "server": "Server",
    "last_hit": "Last hit",
    "lag": "Lag",
}

# Columns that never wrap besides numbers and times: identifiers and short codes.
_ID_COLUMNS = {
    "delivery",
    "delivery_id",
    "link_id",
    "recipient_id",
    "from_link",
    "to_link",
    "bucket",
    "metric",
    "type",
    "sig_status",
    "fingerprint",
    "status",
    "stage",
    "compressed",
}
_URL_COLUMNS = {"url", "path", "input"}
# Which columns go first when a table is too wide (lowest first); the first column stays.
_PRIORITY = {
    "subject": 10,
    "delivery_label": 12,
    "fp_len": 12,
    "fingerprint": 13,
    "compressed": 14,
    "loaded_at": 15,
    "log_format": 16,
    "from_label": 18,
    "to_label": 18,
    "label": 20,
    "byte_offset": 22,
    "hours": 24,
    "persons_clicked": 26,
    "unknown_delivery": 26,
    "unknown_recipient": 26,
    "unknown_link": 26,
    "delivery_known": 25,
    "position": 28,
    "raw_reactivity": 30,
    "lines_per_s": 30,
    "ignored": 32,
    "started_at": 34,
    "deliveries": 34,
}
_DEFAULT_PRIORITY = {"number": 60, "time": 55, "id": 80, "url": 50, "text": 40, "bar": 5}
_MIN_FLEX = {"text": 10, "url": 20}


def inert(text: str) -> str:
    """`text` safe for a terminal: control and bidi characters as visible escapes (\\x1b, \\u202e)."""
    return _UNSAFE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


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
        return iso_local(value, tz) if tz is not None and tz is not dt.UTC else iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def iso_utc(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def iso_local(value: dt.datetime, tz: dt.tzinfo) -> str:
    """A time (naive values are UTC) in `tz`, ISO 8601 with its offset."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(tz).isoformat(timespec="seconds")


def zone_note(tz: dt.tzinfo | None) -> str:
    """The line saying which zone the times of a table are in."""
    name = str(getattr(tz, "key", "")) or "UTC"
    if tz is None or tz is dt.UTC or name == "UTC":
        return "Times in UTC (set tz in the config, TRACKLOG_TZ or --tz for another zone)"
    return f"Times in {name} (ISO 8601 with the offset; JSON is always UTC)"


def bar_text(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `value` scaled so that `top` fills `width` characters."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(value / top * width * 8)
    full, part = divmod(max(eighths, 1), 8)
    return "█" * full + (_PARTIAL_BLOCKS[part] if part else "")


def shorten_middle(text: str, width: int) -> str:
    """`text` cut to `width` characters in the middle (keeps a URL's host and the end of its path)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) * 3 // 5
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def shorten_url(url: str, width: int) -> str:
    """`url` in `width` characters: without its scheme first, then cut in the middle of the path
    so that the host and the end of the path stay ("shop.example.com/…/winter-layering")."""
    if len(url) <= width:
        return url
    rest = url.split("://", 1)[1] if "://" in url else url
    if len(rest) <= width:
        return rest
    host, slash, path = rest.partition("/")
    if not slash or len(host) + 3 > width:
        return shorten_middle(rest, width)
    tail = width - len(host) - 2  # host + "/…" + tail
    return f"{host}/…{path[-tail:]}"


def json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, decimal.Decimal):
        return str(value)  # money stays exact: a JSON number would be read as a float
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def rows_of(table: Result | pa.Table) -> list[dict[str, Any]]:
    return as_result(table).to_pylist()


def as_result(table: Result | pa.Table) -> Result:
    """`table` as a Result: an Arrow table (Spark, the ingest summary) is read into one."""
    return table if isinstance(table, Result) else Result.from_arrow(table)


@dataclass
class Section:
    """One table of a report, with what only the rich table shows."""

    table: Result | pa.Table
    name: str = ""
    title: str | None = None
    # bar column header -> numeric column it draws (appended after the data columns; a picture
    # of a value already in the row, so the data cells still agree with CSV cell for cell)
    bars: Mapping[str, str] = field(default_factory=dict)
    bar_styles: Mapping[str, str] = field(default_factory=dict)  # bar header -> rich style
    # marks written after the last bar of a row (row index -> text), e.g. "◀ 50% of opens"
    marks: Mapping[int, str] = field(default_factory=dict)
    hidden: Sequence[str] = ()  # columns the table leaves out (the same thing said by another)
    headers: Mapping[str, str] = field(default_factory=dict)  # this table's own HEADERS
    picture: bool = False  # shown in the table only, not in CSV or JSON (figures given elsewhere)
    vertical: bool = False  # one object: field | value rows (two pairs side by side when wide)


MIN_SHARED_ROWS = 10  # the fewest rows a table shows when the tables of a report share a screen


def render(
    table: Result | pa.Table,
    fmt: str = "table",
    *,
    out: TextIO | None = None,
    title: str | None = None,
    single: bool = False,
    footer: Sequence[str] = (),
    console: Console | None = None,
    bars: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    tz: dt.tzinfo | None = None,
    excel_safe: bool = False,
    max_rows: int | None = None,
) -> None:
    """Write `table` to `out` (stdout) in `fmt`.

    single: the table holds one object (a one-delivery report): JSON prints an object and the
    rich table shows it as field | value rows.
    footer: lines printed under the rich table only (on CSV/JSON they would corrupt the data).
    bars: bar columns of the rich table (see Section).
    tz: show times in this zone in the table and CSV; JSON always carries UTC.
    excel_safe: CSV text cells that a spreadsheet would run as a formula are neutralised
    (tracklog.spreadsheet).
    max_rows: the rich table shows at most this many rows and says how many it left out.
    """
    section = Section(table, title=title, bars=bars or {}, vertical=single, headers=headers or {})
    render_sections(
        [section],
        fmt,
        out=out,
        single=single,
        footer=footer,
        console=console,
        tz=tz,
        excel_safe=excel_safe,
        max_rows=max_rows,
    )


def render_sections(
    sections: Sequence[Section],
    fmt: str = "table",
    *,
    out: TextIO | None = None,
    single: bool = False,
    footer: Sequence[str] = (),
    console: Console | None = None,
    tz: dt.tzinfo | None = None,
    excel_safe: bool = False,
    max_rows: int | None = None,
) -> None:
    """Write a report made of one or more tables.

    More than one: JSON prints an object {name: [rows...]}, the rich output one table after the
    other, and CSV only the first: a CSV stream is one table, so that it can be piped into
    another tool (the caller passes the table asked for first). `max_rows`: the rich tables
    share a screen of this many rows (each of n tables shows at most max_rows // n, and at least
    MIN_SHARED_ROWS), and a note under a table that was cut says how many rows it has and how to
    see them (CSV and JSON always carry every row).
    """
    out = out if out is not None else sys.stdout
    sections = [replace(s, table=as_result(s.table)) for s in sections]
    data = [s for s in sections if not s.picture]
    if fmt == "json":
        import json  # each format imports what only it uses: a command's start-up is its cost

        out.write(json.dumps(_json_data(data, single), ensure_ascii=False, indent=2) + "\n")
        return
    if fmt == "csv":
        import csv

        # Data, exact, when piped; on a terminal the text is made inert like a table's.
        clean = inert if _isatty(out) else str
        writer = csv.writer(out, lineterminator="\n")
        table = as_result(data[0].table)
        if excel_safe:
            table = _neutralised(table)
        writer.writerow(table.column_names)
        for row in table.rows:
            writer.writerow([clean(cell_text(v, tz)) for v in row])
        return
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    from rich.console import Console

    # markup and emoji codes off: nothing printed is ever read as either (and their code is not loaded)
    console = console or Console(
        file=out, highlight=False, soft_wrap=False, width=_width(out), markup=False, emoji=False
    )
    share = None if max_rows is None else max(max_rows // len(sections), MIN_SHARED_ROWS)
    for section in sections:
        rows = as_result(section.table).num_rows
        cut = share is not None and rows > share and not section.vertical
        if cut:
            section = replace(section, table=as_result(section.table).slice(0, share))
        printed, dropped = (
            _vertical(section, tz, console.width)
            if section.vertical
            else _rich_table(section, tz, console.width)
        )
        console.print(printed)
        if cut:
            note(
                console,
                f"(the first {share} of {rows} rows: --limit N shows N, --format csv or json every row)",
            )
        if dropped:
            names = ", ".join(HEADERS.get(d, d) for d in dropped)
            note(console, f"(not shown at this width: {names}; see --format csv or a wider terminal)")
    for line in footer:
        note(console, line)
    if any(_kind(n, k) == "time" for s in sections for n, k in _columns(as_result(s.table))):
        note(console, zone_note(tz))


def note(console: Console, text: str, style: str | None = None) -> None:
    """One line of text (which may hold log or manifest text) on `console`, never read as markup."""
    from rich.text import Text

    console.print(Text(inert(text), style=style or ""), highlight=False)


def _isatty(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty is not None and isatty())


def _width(out: TextIO) -> int | None:
    """The terminal's width on a terminal (rich reads it, or COLUMNS); piped, COLUMNS when set,
    else wide enough that piped tables do not fold."""
    import os

    if _isatty(out):
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


def _json_data(sections: Sequence[Section], single: bool) -> Any:
    lists = [[{k: json_value(v) for k, v in r.items()} for r in rows_of(s.table)] for s in sections]
    if len(sections) > 1:
        return {s.name: rows for s, rows in zip(sections, lists, strict=True)}
    if single:
        return lists[0][0] if lists[0] else {}
    return lists[0]


def _columns(table: Result) -> list[tuple[str, str]]:
    return list(zip(table.names, table.kinds, strict=True))


def _neutralised(table: Result) -> Result:
    """`table` with every text cell neutralised for a spreadsheet (tracklog.spreadsheet)."""
    from tracklog.spreadsheet import neutralised_text

    text = [k == "string" for k in table.kinds]
    rows = tuple(
        tuple(neutralised_text(v) if t and isinstance(v, str) else v for v, t in zip(r, text, strict=True))
        for r in table.rows
    )
    return Result(table.names, table.kinds, rows)


def _kind(name: str, kind: str) -> str:
    """How a column of this Result kind reads in a table: number, time, id, url or text."""
    if kind in ("integer", "float", "decimal"):
        return "number"
    if kind in ("timestamp", "date"):
        return "time"
    if kind == "boolean" or name in _ID_COLUMNS:
        return "id"
    if name in _URL_COLUMNS:
        return "url"
    return "text"


@dataclass
class _Col:
    name: str  # field name, or a bar header
    header: str
    kind: str
    cells: list[str]
    priority: int
    width: int = 0  # natural width: the widest cell or header word
    mark: int = 0  # bars: room kept for the marks after them

    def __post_init__(self) -> None:
        words = [len(w) for w in self.header.split()] or [0]
        self.width = max([max(words), *(len(c) for c in self.cells)])

    @property
    def min_width(self) -> int:
        if self.kind == "bar":
            return min(self.width, MIN_BAR_WIDTH + self.mark)
        if self.kind in _MIN_FLEX:
            return min(self.width, _MIN_FLEX[self.kind])
        return self.width


def _overhead(n: int) -> int:
    return 3 * n + 1  # rich's default box: a border before each column and at the end, padding 1+1


def _fit(cols: list[_Col], width: int) -> tuple[list[_Col], list[str], dict[str, int]]:
    """The columns that fit `width` (lowest priority dropped first, never the first column), the
    dropped names, and the width given to each flexible column (text, url, bar)."""
    kept = list(cols)
    dropped: list[str] = []
    while len(kept) > 1 and sum(c.min_width for c in kept) + _overhead(len(kept)) > width:
        victim = min(kept[1:], key=lambda c: (c.priority, -kept.index(c)))
        kept.remove(victim)
        if victim.kind != "bar":
            dropped.append(victim.name)
    spare = width - _overhead(len(kept)) - sum(c.min_width for c in kept)
    widths = {c.name: c.min_width for c in kept if c.kind in ("text", "url", "bar")}
    for c in sorted((c for c in kept if c.name in widths), key=lambda c: -c.priority):
        extra = max(0, min(c.width - widths[c.name], spare))
        widths[c.name] += extra
        spare -= extra
    for c in kept:  # what is left keeps headers on fewer lines
        if c.name not in widths:
            extra = max(0, min(len(c.header) - c.width, spare))
            widths[c.name] = c.width + extra
            spare -= extra
    return kept, dropped, widths


def _header_text(header: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(header, max(width, 1), break_long_words=False)) or header


def _rich_table(section: Section, tz: dt.tzinfo | None, width: int) -> tuple[Table, list[str]]:
    from rich.table import Table
    from rich.text import Text

    table = as_result(section.table)
    rows = table.to_pylist()
    cols = [
        _Col(
            name,
            inert(section.headers.get(name) or HEADERS.get(name, name)),
            kind,
            [inert(cell_text(r[name], tz)) for r in rows],
            _PRIORITY.get(name, _DEFAULT_PRIORITY[kind]),
        )
        for name, result_kind in _columns(table)
        if name not in section.hidden
        for kind in [_kind(name, result_kind)]
    ]
    marks = {i: inert(m) for i, m in section.marks.items()}
    mark_w = max((len(m) + 1 for m in marks.values()), default=0)
    bar_values: dict[str, list[float]] = {}
    for header, source in section.bars.items():
        bar_values[header] = [float(r[source] or 0) for r in rows]
        bar = _Col(header, header, "bar", [], _DEFAULT_PRIORITY["bar"])
        bar.mark = mark_w if header == list(section.bars)[-1] else 0
        bar.width = BAR_WIDTH + bar.mark
        cols.append(bar)
    kept, dropped, widths = _fit(cols, width)
    rt = Table(title=Text(inert(section.title)) if section.title else None, header_style="bold")
    for c in kept:
        w = widths.get(c.name, c.width)
        if c.kind == "bar":
            style = section.bar_styles.get(c.name, "cyan")
            rt.add_column(c.header, justify="left", no_wrap=True, overflow="crop", width=w, style=style)
        elif c.kind == "text":
            rt.add_column(_header_text(c.header, w), justify="left", overflow="fold", max_width=w)
        else:
            right = c.kind == "number"
            rt.add_column(
                _header_text(c.header, w), justify="right" if right else "left", no_wrap=True, min_width=w
            )
    for i in range(len(rows)):
        cells = []
        for c in kept:
            if c.kind == "bar":
                values = bar_values[c.name]
                last = c.name == list(section.bars)[-1]
                room = widths[c.name] - (mark_w if last else 0)
                text = bar_text(values[i], max(values), max(room, 1))
                if last and i in marks:
                    text = f"{text} {marks[i]}" if text else marks[i]
            elif c.kind == "url":
                text = shorten_url(c.cells[i], widths[c.name])
            else:
                text = c.cells[i]
            cells.append(Text(text))
        rt.add_row(*cells)
    return rt, dropped


def _vertical(section: Section, tz: dt.tzinfo | None, width: int) -> tuple[Table, list[str]]:
    """One object as field | value rows; two pairs side by side when the terminal is wide."""
    from rich.table import Table
    from rich.text import Text

    table = as_result(section.table)
    rows = table.to_pylist()
    pairs = [
        (
            inert(section.headers.get(name) or HEADERS.get(name, name)),
            inert(cell_text(rows[0][name], tz) if rows else ""),
        )
        for name in table.column_names
        if name not in section.hidden
    ]
    field_w = max((len(f) for f, _ in pairs), default=5)
    value_w = max((len(v) for _, v in pairs), default=5)
    columns = 2 if 2 * (field_w + value_w) + _overhead(4) <= width and len(pairs) > 6 else 1
    value_room = max(8, width - _overhead(2 * columns) - columns * field_w) // columns
    rt = Table(title=Text(inert(section.title)) if section.title else None, header_style="bold")
    for _ in range(columns):
        rt.add_column("Field", justify="left", no_wrap=True)
        rt.add_column("Value", justify="right", overflow="fold", max_width=value_room)
    per = math.ceil(len(pairs) / columns)
    for i in range(per):
        cells: list[Text] = []
        for c in range(columns):
            j = c * per + i
            f, v = pairs[j] if j < len(pairs) else ("", "")
            cells += [Text(f), Text(v)]
        rt.add_row(*cells)
    return rt, []
