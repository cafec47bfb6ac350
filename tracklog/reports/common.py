"""What the reports share: the time window, looking up a delivery, running a query to Arrow.

Every report takes a connection (read-only is fine): the store's DuckDB, or an engine over the
exported lake (tracklog.engines), and returns a tracklog.result.Result (DuckDB's rows as they
are fetched: no pyarrow); none prints. Only query(),
fetch_one() and fetch_all() talk to the engine. Values from users reach SQL as bound parameters only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tracklog import derived, metrics
from tracklog.duck import duckdb
from tracklog.engines import Connection
from tracklog.errors import NotFoundError, UsageError
from tracklog.result import Result

# Open ends of a window, inside DuckDB's and Spark's TIMESTAMP range, so the query text is the
# same whether or not a bound was given.
_EARLIEST = dt.datetime(1970, 1, 1)
_LATEST = dt.datetime(9999, 12, 31)


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [since, until) of hit times; None is unbounded."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def params(self) -> list[dt.datetime]:
        return [self.since or _EARLIEST, self.until or _LATEST]

    def bounds(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The window as derived.Bounds: None for all time (the stored figures)."""
        if self.since is None and self.until is None:
            return None
        return self.since or _EARLIEST, self.until or _LATEST


ALL_TIME = Window()


def parse_tz(name: str | None) -> dt.tzinfo:
    if not name or name.upper() == "UTC":
        return dt.UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only for a zone other than UTC

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r} (use an IANA name like Europe/Paris, or UTC)") from None


def parse_time(text: str, tz: dt.tzinfo, *, end: bool = False) -> dt.datetime:
    """A date or ISO 8601 time as naive UTC; without an offset it is in `tz`.

    A bare date as the end of a window means the whole day: its end is the next midnight.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time())
        else:
            moment = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a date or ISO 8601 time (try 2026-11-03 or 2026-11-03T09:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def make_window(since: str | None, until: str | None, tz: dt.tzinfo = dt.UTC) -> Window:
    window = Window(
        parse_time(since, tz) if since else None,
        parse_time(until, tz, end=True) if until else None,
    )
    if window.since and window.until and window.since >= window.until:
        raise UsageError(f"--since {since} is not before --until {until}")
    return window


def query(con: Connection, sql: str, params: list[Any] | None = None) -> Result:
    if isinstance(con, duckdb.DuckDBPyConnection):
        return Result.from_cursor(con.execute(sql, params or []))
    return Result.from_arrow(con.query(sql, params))


def fetch_all(con: Connection, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Every row, as tuples."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        return [tuple(r) for r in con.execute(sql, params or []).fetchall()]
    table = con.query(sql, params)
    return list(zip(*(c.to_pylist() for c in table.columns), strict=True))


def fetch_one(con: Connection, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
    """The first row, or None (reads the whole result: DuckDB wants results finished)."""
    rows = fetch_all(con, sql, params)
    return rows[0] if rows else None


def require_delivery(con: Connection, delivery_id: str) -> tuple[str, dt.datetime]:
    """The delivery's label and sent_at, or NotFoundError."""
    row = fetch_one(con, "SELECT label, sent_at FROM deliveries WHERE delivery_id = ?", [delivery_id])
    if row is None:
        raise NotFoundError(
            f"delivery {delivery_id!r} is not in the database "
            "(ingest its manifest with `tracklog ingest --manifest FILE`; `tracklog report deliveries` lists them)"
        )
    return str(row[0]), row[1]


def limit_clause(limit: int | None) -> str:
    """LIMIT from code: an int, checked, so it may be formatted into the text."""
    if limit is None:
        return ""
    if limit < 0:
        raise UsageError(f"--limit must be 0 or more (got {limit})")
    return f" LIMIT {int(limit)}"


def excluded_hits(con: Connection, delivery_id: str | None, window: Window) -> dict[str, int]:
    """Hits shown beside a report but never counted (metrics.NOT_COUNTED: rejected, failed,
    automated, orphan, clock), of one delivery or of all (with the hits that name none): the
    stored figures for all time, the definitions within a window (derived.not_counted)."""
    figures, params = derived.not_counted(window.bounds())
    where = ""
    if delivery_id is not None:
        where, params = " WHERE n.delivery_id = ?", [*params, delivery_id]
    sums = ", ".join(f"sum(n.{name}) AS {name}" for name in metrics.NOT_COUNTED)
    row = fetch_one(con, f"SELECT {sums} FROM ({figures}) n{where}", params)
    return {
        name: int(v or 0)
        for name, v in zip(metrics.NOT_COUNTED, row or (None,) * len(metrics.NOT_COUNTED), strict=True)
    }
