"""Tracking statistics: opens and clicks over time since the send (per bucket, and the time to
reach 50/80/95% of the final counts), or broken down by browser, OS, device type or email domain.

Opens are open-pixel hits and clicks counted clicks (opens_total and clicks_total over time).
The default bucket (`auto`) keeps the timeline to about MAX_ROWS rows: hourly over the first
day then daily, else coarser; buckets before the first and after the last event are left out.
"""

from __future__ import annotations

from tracklog import derived, metrics
from tracklog.engines import Connection
from tracklog.errors import UsageError
from tracklog.reports.common import (
    ALL_TIME,
    Window,
    limit_clause,
    query,
    require_delivery,
)
from tracklog.result import Result

# bucket -> (minutes per bucket over the first day, minutes per bucket after it); auto tries
# AUTO_SCHEMES in order and keeps the first that gives at most MAX_ROWS rows.
BUCKETS: dict[str, tuple[int, int] | None] = {
    "auto": None,
    "1h": (60, 60),
    "3h": (180, 180),
    "1d": (1440, 1440),
    "7d": (10080, 10080),
}
AUTO_SCHEMES = ((60, 1440), (180, 1440), (1440, 1440), (10080, 10080))
MAX_ROWS = 40
BREAKDOWNS = ("browser", "os", "device", "domain")
REACH_PERCENTS = (50, 80, 90, 95)


def timeline(
    con: Connection,
    bucket: str = "auto",
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
) -> Result:
    """Columns bucket ('+3h', '+2d'), hours (since the send, bucket start), opens, clicks; from
    the first to the last bucket with an open or a click, empty buckets between included."""
    return timeline_and_reach(con, bucket, delivery_id, window)[0]


def timeline_and_reach(
    con: Connection,
    bucket: str = "auto",
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
) -> tuple[Result, Result]:
    """timeline() and reach(), from one read of the opens and clicks per minute since the send
    (derived.minutes: stored for all time), which one query reads twice (`report stats` and the
    dashboard show both)."""
    if bucket not in BUCKETS:
        raise UsageError(f"--bucket must be one of {', '.join(BUCKETS)} (got {bucket!r})")
    if delivery_id is not None:
        require_delivery(con, delivery_id)
    figures, params = derived.minutes(window.bounds())
    where = "TRUE" if delivery_id is None else "f.delivery_id = ?"
    params = params if delivery_id is None else [*params, delivery_id]
    reach_cols = ", ".join(
        f"{metrics.tenths_sql(f'min(CASE WHEN 100 * r.n >= {p} * r.total THEN r.minutes END)', '60')}"
        f" AS hours_to_{p}"
        for p in REACH_PERCENTS
    )
    no_reach = ", ".join(f"CAST(NULL AS DOUBLE) AS hours_to_{p}" for p in REACH_PERCENTS)
    # Per minute since the send: the opens and clicks (stored for all time, their definitions
    # over a window: derived.minutes), summed over the deliveries; then, per hour, the
    # timeline's rows, and, per metric, a running sum over the minutes: the first minute whose
    # running count reaches p% is the minute of the event that does (minutes grow with the time
    # since the send).
    sql = f"""
WITH m AS (
    SELECT f.minutes, sum(f.opens) AS opens, sum(f.clicks) AS clicks
    FROM ({figures}) f
    WHERE {where}
    GROUP BY f.minutes
)
SELECT 'timeline' AS part, floor(m.minutes / 60) AS h, sum(m.opens) AS opens, sum(m.clicks) AS clicks,
    CAST(NULL AS STRING) AS metric, CAST(NULL AS BIGINT) AS total, {no_reach}
FROM m
GROUP BY floor(m.minutes / 60)
HAVING sum(m.opens) + sum(m.clicks) > 0
UNION ALL
SELECT 'reach', NULL, NULL, NULL, r.metric, CAST(max(r.total) AS BIGINT), {reach_cols}
FROM (
    SELECT t.metric, t.minutes,
        sum(t.n) OVER (PARTITION BY t.metric ORDER BY t.minutes) AS n,
        sum(t.n) OVER (PARTITION BY t.metric) AS total
    FROM (
        SELECT 'opens' AS metric, m.minutes, m.opens AS n FROM m WHERE m.opens > 0
        UNION ALL
        SELECT 'clicks', m.minutes, m.clicks FROM m WHERE m.clicks > 0
    ) t
) r
GROUP BY r.metric
ORDER BY part DESC, h, metric DESC
"""
    both = query(con, sql, params)
    hourly = [(int(r[1]), int(r[2]), int(r[3])) for r in both.rows if r[0] == "timeline"]
    schemes = AUTO_SCHEMES if BUCKETS[bucket] is None else (BUCKETS[bucket],)
    rows: list[tuple[str, int, int, int]] = []
    for scheme in schemes:
        rows = _bucketed(hourly, *scheme)  # type: ignore[misc]
        if len(rows) <= MAX_ROWS:
            break
    buckets = Result(
        ("bucket", "hours", "opens", "clicks"), ("string", "integer", "integer", "integer"), tuple(rows)
    )
    reach_names = ("metric", "total", *(f"hours_to_{p}" for p in REACH_PERCENTS))
    return buckets, both.part(reach_names, "reach")


def _bucketed(hourly: list[tuple[int, int, int]], first: int, later: int) -> list[tuple[str, int, int, int]]:
    """(label, start hour, opens, clicks) per bucket of `first` minutes over the first day (and
    before the send) and of `later` minutes after it, from the first to the last non-empty one."""
    day_buckets = 1440 // first if first != later else 1 << 62  # the same size all along

    def start_hour(n: int) -> int:
        return n * first // 60 if n < day_buckets else 24 + (n - day_buckets) * later // 60

    found: dict[int, list[int]] = {}
    for h, opens, clicks in hourly:
        n = h * 60 // first if h < 24 or first == later else day_buckets + (h - 24) * 60 // later
        figures = found.setdefault(n, [0, 0])
        figures[0] += opens
        figures[1] += clicks
    # Empty buckets are filled here: a handful of rows, and SQL would need a table function.
    numbers = range(min(found), max(found) + 1) if found else range(0)
    return [
        (
            _bucket_label(start_hour(n), first if n < day_buckets else later),
            start_hour(n),
            *found.get(n, [0, 0]),
        )  # type: ignore[misc]
        for n in numbers
    ]


def _bucket_label(hours: int, minutes: int) -> str:
    """'+3h' for buckets of hours, '+2d' for buckets of days; a bucket before the send (hits
    within the clock window) '-1h'."""
    sign = "+" if hours >= 0 else "-"
    if minutes % 1440 == 0:
        return f"{sign}{abs(hours) // 24}d"
    return f"{sign}{abs(hours)}h"


def reach_marks(buckets: Result, reach_table: Result, percents: tuple[int, ...] = (50, 90)) -> dict[int, str]:
    """Row index of `buckets` -> "◀ 50% of opens" for the bucket in which opens reach each of
    `percents` of their final count (from the reach table)."""
    opens = [r for r in reach_table.to_pylist() if r["metric"] == "opens"]
    starts = buckets.values("hours")
    reached: dict[int, list[str]] = {}
    for p in percents:
        hours = opens[0].get(f"hours_to_{p}") if opens else None
        if hours is None or not starts:
            continue
        row = max((i for i, s in enumerate(starts) if s <= hours), default=0)
        reached.setdefault(row, []).append(f"{p}%")
    return {row: f"◀ {', '.join(ps)} of opens" for row, ps in reached.items()}


def reach(con: Connection, delivery_id: str | None = None, window: Window = ALL_TIME) -> Result:
    """Columns metric (opens|clicks), total, hours_to_50, hours_to_80, hours_to_90, hours_to_95
    (one decimal)."""
    return timeline_and_reach(con, "auto", delivery_id, window)[1]


def breakdown(
    con: Connection,
    by: str,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> Result:
    """--by browser|os|device: <by>, opens, clicks, readers, share (of opens);
    --by domain: domain, sent, delivered, opens_unique, clicks_unique, open_rate, click_rate."""
    if by not in BREAKDOWNS:
        raise UsageError(f"--by must be one of {', '.join(BREAKDOWNS)} (got {by!r})")
    if delivery_id is not None:
        require_delivery(con, delivery_id)
    if by == "domain":
        return _by_domain(con, delivery_id, window, limit)
    figures, params = derived.dimensions(by, window.bounds())
    where = "" if delivery_id is None else " WHERE b.delivery_id = ?"
    params = params if delivery_id is None else [*params, delivery_id]
    # A reader is one delivery's recipient, so the readers of deliveries add up.
    inner = f"""
SELECT b.value AS {by}, CAST(sum(b.opens) AS BIGINT) AS opens, CAST(sum(b.clicks) AS BIGINT) AS clicks,
    CAST(sum(b.readers) AS BIGINT) AS readers
FROM ({figures}) b{where}
GROUP BY b.value
"""
    sql = metrics.with_shares_sql(inner, [by, "opens", "clicks", "readers"], "opens", by)
    return query(con, sql + f" ORDER BY opens DESC, clicks DESC, {by}" + limit_clause(limit), params)


def _by_domain(con: Connection, delivery_id: str | None, window: Window, limit: int | None) -> Result:
    figures, params = derived.domains(window.bounds())
    where = "" if delivery_id is None else " WHERE d.delivery_id = ?"
    params = params if delivery_id is None else [*params, delivery_id]
    rates = ", ".join(f"{metrics.rate_sql(name, 't')} AS {name}" for name in ("open_rate", "click_rate"))
    sql = f"""
SELECT t.domain, t.sent, t.delivered, t.opens_unique, t.clicks_unique, {rates}
FROM (
    SELECT d.domain, CAST(sum(d.sent) AS BIGINT) AS sent, CAST(sum(d.delivered) AS BIGINT) AS delivered,
        CAST(sum(d.opens_unique) AS BIGINT) AS opens_unique,
        CAST(sum(d.clicks_unique) AS BIGINT) AS clicks_unique
    FROM ({figures}) d{where}
    GROUP BY d.domain
) t
ORDER BY t.delivered DESC, t.sent DESC, t.domain NULLS LAST
"""
    return query(con, sql + limit_clause(limit), params)
