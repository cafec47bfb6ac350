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
from collections.abc import Sequence
from typing import Any, TextIO

import pyarrow as pa
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json")


def cell_text(value: Any) -> str:
    """How a value reads in a table cell and a CSV field."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.1f}"
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def iso_utc(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


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


def render(
    table: pa.Table,
    fmt: str = "table",
    *,
    out: TextIO | None = None,
    title: str | None = None,
    single: bool = False,
    footer: Sequence[str] = (),
    console: Console | None = None,
) -> None:
    """Write `table` to `out` (stdout) in `fmt`.

    single: the table holds one object (a one-delivery report): JSON prints an object.
    footer: lines printed under the rich table only (on CSV/JSON they would corrupt the data).
    """
    out = out if out is not None else sys.stdout
    rows = rows_of(table)
    if fmt == "json":
        data: Any = [{k: json_value(v) for k, v in r.items()} for r in rows]
        if single:
            data = data[0] if data else {}
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for r in rows:
            writer.writerow([cell_text(v) for v in r.values()])
        return
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    console = console or Console(file=out, highlight=False, soft_wrap=False)
    numeric = {
        f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    }
    rt = Table(title=title, show_lines=False, header_style="bold")
    for name in table.column_names:
        rt.add_column(name, justify="right" if name in numeric else "left", overflow="fold")
    for r in rows:
        rt.add_row(*[cell_text(v) for v in r.values()])
    console.print(rt)
    for line in footer:
        console.print(line)
