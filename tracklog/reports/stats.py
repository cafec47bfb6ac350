"""Tracking statistics: opens and clicks over time since the send (per bucket, and the time to
reach 50/80/95% of the final counts), or broken down by browser, OS, device type or email domain.

Opens are open-pixel hits and clicks counted clicks (opens_total and clicks_total over time).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tracklog import metrics
from tracklog.errors import UsageError
from tracklog.reports.common import ALL_TIME, Window, limit_clause, prepare, query, require_delivery
from tracklog.useragent import UNKNOWN, parse_agent

BUCKETS = {"1h": 60, "3h": 180, "1d": 1440}  # bucket -> minutes
BREAKDOWNS = ("browser", "os", "device", "domain")
REACH_PERCENTS = (50, 80, 95)

# Whole minutes from the send to the event, from the interval's fields: epoch and date_diff
# are not portable, extract(DAY|HOUR|MINUTE FROM interval) is.
_ELAPSED_MINUTES = (
    "(extract(DAY FROM e.ts - e.sent_at) * 1440 + extract(HOUR FROM e.ts - e.sent_at) * 60"
    " + extract(MINUTE FROM e.ts - e.sent_at))"
)
_UA_VIEW = "tracklog_user_agents"


def _scope(
    con: duckdb.DuckDBPyConnection, delivery_id: str | None, window: Window
) -> tuple[str, list[object]]:
    where = "e.ts >= ? AND e.ts < ?"
    params: list[object] = [*window.params()]
    if delivery_id is not None:
        require_delivery(con, delivery_id)
        where += " AND e.delivery_id = ?"
        params.append(delivery_id)
    return where, params


def timeline(
    con: duckdb.DuckDBPyConnection,
    bucket: str = "1h",
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
) -> pa.Table:
    """Columns bucket ('+3h'), hours (since the send, bucket start), opens, clicks; empty buckets included."""
    if bucket not in BUCKETS:
        raise UsageError(f"--bucket must be one of {', '.join(BUCKETS)} (got {bucket!r})")
    prepare(con)
    where, params = _scope(con, delivery_id, window)
    minutes = BUCKETS[bucket]
    sql = f"""
SELECT floor({_ELAPSED_MINUTES} / {minutes}) AS n,
    count(*) FILTER (WHERE e.type = 'open') AS opens,
    count(*) FILTER (WHERE e.type = 'click') AS clicks
FROM events e
WHERE {where} AND e.type IN ('open', 'click')
GROUP BY ALL
ORDER BY n
"""
    found = {int(r[0]): (int(r[1]), int(r[2])) for r in con.execute(sql, params).fetchall()}
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


def reach(
    con: duckdb.DuckDBPyConnection, delivery_id: str | None = None, window: Window = ALL_TIME
) -> pa.Table:
    """Columns metric (opens|clicks), total, hours_to_50, hours_to_80, hours_to_95 (one decimal)."""
    prepare(con)
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
        WHERE {where} AND e.type IN ('open', 'click')
        GROUP BY ALL
    ) m
) r
GROUP BY r.type
ORDER BY metric DESC
"""
    return query(con, sql, params)


def breakdown(
    con: duckdb.DuckDBPyConnection,
    by: str,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> pa.Table:
    """--by browser|os|device: <by>, opens, clicks, readers, share (of opens);
    --by domain: domain, sent, delivered, opens_unique, clicks_unique, open_rate, click_rate."""
    if by not in BREAKDOWNS:
        raise UsageError(f"--by must be one of {', '.join(BREAKDOWNS)} (got {by!r})")
    prepare(con)
    if by == "domain":
        return _by_domain(con, delivery_id, window, limit)
    where, params = _scope(con, delivery_id, window)
    con.register(_UA_VIEW, _parsed_agents(con, where, params))
    try:
        # readers: distinct (delivery, recipient) pairs, which recipient_key identifies (metrics.py).
        # Grouped per reader first, then counted: faster than mixing count(DISTINCT ...) with
        # other aggregates, which DuckDB plans as two passes over the events.
        inner = f"""
SELECT p.{by}, CAST(sum(p.opens) AS BIGINT) AS opens, CAST(sum(p.clicks) AS BIGINT) AS clicks,
    count(*) AS readers
FROM (
    SELECT coalesce(u.{by}, '{"other" if by == "device" else UNKNOWN}') AS {by}, e.recipient_key,
        count(*) FILTER (WHERE e.type = 'open') AS opens,
        count(*) FILTER (WHERE e.type = 'click') AS clicks
    FROM events e
    LEFT JOIN {_UA_VIEW} u ON u.user_agent = e.user_agent
    WHERE {where} AND e.type IN ('open', 'click')
    GROUP BY ALL
) p
GROUP BY p.{by}
"""
        sql = metrics.with_shares_sql(inner, [by, "opens", "clicks", "readers"], "opens", by)
        return query(con, sql + f" ORDER BY opens DESC, clicks DESC, {by}" + limit_clause(limit), params)
    finally:
        con.unregister(_UA_VIEW)


def _parsed_agents(con: duckdb.DuckDBPyConnection, where: str, params: list[object]) -> pa.Table:
    """The distinct user agents in scope with their parsed browser, os and device type."""
    agents = [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT e.user_agent FROM events e WHERE {where} AND e.user_agent IS NOT NULL", params
        ).fetchall()
    ]
    parsed = [parse_agent(a) for a in agents]
    return pa.table(
        {
            "user_agent": pa.array(agents, pa.string()),
            "browser": pa.array([p.browser for p in parsed], pa.string()),
            "os": pa.array([p.os for p in parsed], pa.string()),
            "device": pa.array([p.device for p in parsed], pa.string()),
        }
    )


def _by_domain(
    con: duckdb.DuckDBPyConnection, delivery_id: str | None, window: Window, limit: int | None
) -> pa.Table:
    where, params = _scope(con, delivery_id, window)
    rwhere = "TRUE" if delivery_id is None else "r.delivery_id = ?"
    opening = ", ".join(f"'{t}'" for t in metrics.OPENING_TYPES)
    # Per domain: the manifest's recipients, and those among them with counted events (every
    # event is of a manifest recipient), each recipient reduced to two flags first.
    sql = f"""
SELECT t.domain, t.sent, t.delivered,
    coalesce(a.opens_unique, 0) AS opens_unique, coalesce(a.clicks_unique, 0) AS clicks_unique,
    {metrics.pct_sql("coalesce(a.opens_unique, 0)", "t.delivered")} AS open_rate,
    {metrics.pct_sql("coalesce(a.clicks_unique, 0)", "t.delivered")} AS click_rate
FROM (
    SELECT {metrics.email_domain_sql("r.email")} AS domain, count(*) AS sent,
        count(*) FILTER (WHERE r.status = 'sent') AS delivered
    FROM recipients r
    WHERE {rwhere}
    GROUP BY ALL
) t
LEFT JOIN (
    SELECT f.email_domain, count(*) FILTER (WHERE f.opened = 1) AS opens_unique,
        count(*) FILTER (WHERE f.clicked = 1) AS clicks_unique
    FROM (
        SELECT e.email_domain, e.recipient_key,
            max(CASE WHEN e.type IN ({opening}) THEN 1 ELSE 0 END) AS opened,
            max(CASE WHEN e.type = 'click' THEN 1 ELSE 0 END) AS clicked
        FROM events e
        WHERE {where}
        GROUP BY e.email_domain, e.recipient_key
    ) f
    GROUP BY f.email_domain
) a ON a.email_domain IS NOT DISTINCT FROM t.domain
ORDER BY t.delivered DESC, t.sent DESC, t.domain NULLS LAST
"""
    rparams = [] if delivery_id is None else [delivery_id]
    return query(con, sql + limit_clause(limit), rparams + params)
