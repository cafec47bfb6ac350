"""Tracking statistics: opens and clicks over time since the send (per bucket, and the time to
reach 50/80/95% of the final counts), or broken down by browser, OS, device type or email domain.

Opens are open-pixel hits and clicks counted clicks (opens_total and clicks_total over time).
"""

from __future__ import annotations

import pyarrow as pa

from tracklog import derived, metrics
from tracklog.engines import Connection
from tracklog.errors import UsageError
from tracklog.reports.common import (
    ALL_TIME,
    Window,
    fetch_all,
    limit_clause,
    query,
    require_delivery,
)

BUCKETS = {"1h": 60, "3h": 180, "1d": 1440}  # bucket -> minutes
BREAKDOWNS = ("browser", "os", "device", "domain")
REACH_PERCENTS = (50, 80, 95)

# Whole minutes from the send to the event, from the interval's fields: epoch and date_diff
# are not portable, extract(DAY|HOUR|MINUTE FROM interval) is.
_ELAPSED_MINUTES = (
    "(extract(DAY FROM e.ts - e.sent_at) * 1440 + extract(HOUR FROM e.ts - e.sent_at) * 60"
    " + extract(MINUTE FROM e.ts - e.sent_at))"
)


def _scope(con: Connection, delivery_id: str | None, window: Window) -> tuple[str, list[object]]:
    where = "e.ts >= ? AND e.ts < ?"
    params: list[object] = [*window.params()]
    if delivery_id is not None:
        require_delivery(con, delivery_id)
        where += " AND e.delivery_id = ?"
        params.append(delivery_id)
    return where, params


def timeline(
    con: Connection,
    bucket: str = "1h",
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
) -> pa.Table:
    """Columns bucket ('+3h'), hours (since the send, bucket start), opens, clicks; empty buckets included."""
    if bucket not in BUCKETS:
        raise UsageError(f"--bucket must be one of {', '.join(BUCKETS)} (got {bucket!r})")
    where, params = _scope(con, delivery_id, window)
    minutes = BUCKETS[bucket]
    sql = f"""
SELECT floor({_ELAPSED_MINUTES} / {minutes}) AS n,
    {metrics.EVENT_COUNTS["opens_total"]} AS opens,
    {metrics.EVENT_COUNTS["clicks_total"]} AS clicks
FROM events e
WHERE {where} AND {metrics.AGENT_EVENTS_SQL}
GROUP BY ALL
ORDER BY n
"""
    found = {int(r[0]): (int(r[1]), int(r[2])) for r in fetch_all(con, sql, params)}
    # Empty buckets are filled here: a handful of rows, and SQL would need a table function.
    numbers = range(min(found), max(found) + 1) if found else range(0)
    hours = [n * minutes // 60 for n in numbers]
    return pa.table(
        {
            "bucket": pa.array([_bucket_label(n, minutes) for n in numbers], pa.string()),
            "hours": pa.array(hours, pa.int64()),
            "opens": pa.array([found.get(n, (0, 0))[0] for n in numbers], pa.int64()),
            "clicks": pa.array([found.get(n, (0, 0))[1] for n in numbers], pa.int64()),
        }
    )


def _bucket_label(n: int, minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"+{n * minutes // 1440}d"
    return f"+{n * minutes // 60}h"


def reach(con: Connection, delivery_id: str | None = None, window: Window = ALL_TIME) -> pa.Table:
    """Columns metric (opens|clicks), total, hours_to_50, hours_to_80, hours_to_95 (one decimal)."""
    where, params = _scope(con, delivery_id, window)
    cols = ", ".join(
        f"{metrics.tenths_sql(f'min(CASE WHEN 100 * r.n >= {p} * r.total THEN r.minutes END)', '60')}"
        f" AS hours_to_{p}"
        for p in REACH_PERCENTS
    )
    # Counted per minute first, then a running sum: the first minute whose running count reaches
    # p% is the minute of the event that does (minutes grow with the time since the send).
    sql = f"""
SELECT CASE WHEN r.type = 'open' THEN 'opens' ELSE 'clicks' END AS metric,
    CAST(max(r.total) AS BIGINT) AS total, {cols}
FROM (
    SELECT m.type, m.minutes,
        sum(m.n) OVER (PARTITION BY m.type ORDER BY m.minutes) AS n,
        sum(m.n) OVER (PARTITION BY m.type) AS total
    FROM (
        SELECT e.type, {_ELAPSED_MINUTES} AS minutes, count(*) AS n
        FROM events e
        WHERE {where} AND {metrics.AGENT_EVENTS_SQL}
        GROUP BY ALL
    ) m
) r
GROUP BY r.type
ORDER BY metric DESC
"""
    return query(con, sql, params)


def breakdown(
    con: Connection,
    by: str,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> pa.Table:
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


def _by_domain(con: Connection, delivery_id: str | None, window: Window, limit: int | None) -> pa.Table:
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
