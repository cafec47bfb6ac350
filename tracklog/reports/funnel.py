"""The conversion funnel of a delivery (delivered -> opened -> clicked -> visited -> converted)
and its web-tracking indicators and revenue per currency, all from the definitions of
tracklog.metrics over the events and page views within a window.
"""

from __future__ import annotations

from tracklog import metrics
from tracklog.engines import Connection
from tracklog.reports.common import ALL_TIME, Window, fetch_one, query, require_delivery
from tracklog.result import Result

_DELIVERED = (
    "SELECT r.delivery_id, count(*) FILTER (WHERE r.status = 'sent') AS delivered FROM recipients r"
    " WHERE r.delivery_id = ? GROUP BY r.delivery_id"
)


def funnel(con: Connection, delivery_id: str, window: Window = ALL_TIME) -> Result:
    """One row per step (metrics.FUNNEL_STEPS): readers, rate (% of the step before) and
    of_delivered (% of the delivered messages)."""
    require_delivery(con, delivery_id)
    steps = metrics.FUNNEL_STEPS
    rows = " UNION ALL ".join(
        f"SELECT {i} AS n, '{step}' AS step, f.{step} AS readers, "
        + ("CAST(NULL AS DOUBLE)" if i == 0 else metrics.pct_sql(f"f.{step}", f"f.{steps[i - 1]}"))
        + f" AS rate, {metrics.pct_sql(f'f.{step}', 'f.delivered')} AS of_delivered FROM f"
        for i, step in enumerate(steps)
    )
    events = metrics.funnel_sql(
        "e.delivery_id = ? AND e.ts >= ? AND e.ts < ?", "p.delivery_id = ? AND p.ts >= ? AND p.ts < ?"
    )
    sql = f"""
WITH f AS (SELECT * FROM ({events}) q WHERE q.delivery_id = ?)
SELECT s.step, s.readers, s.rate, s.of_delivered FROM ({rows}) s ORDER BY s.n
"""
    params = [delivery_id, *window.params(), delivery_id, *window.params(), delivery_id]
    return query(con, sql, params)


def web_indicators(con: Connection, delivery_id: str, window: Window = ALL_TIME) -> Result:
    """One row: metrics.WEB_INDICATORS of the delivery's attributed page views (0 when none)."""
    inner = metrics.web_indicators_sql("p.delivery_id = ? AND p.ts >= ? AND p.ts < ?")
    columns = ", ".join(
        f"coalesce(w.{c}, {'CAST(0 AS DOUBLE)' if c == 'pages_per_visitor' else 0}) AS {c}"
        for c in metrics.WEB_INDICATORS
    )
    sql = f"SELECT {columns} FROM (SELECT 1 AS one) o LEFT JOIN ({inner}) w ON TRUE"
    return query(con, sql, [delivery_id, *window.params()])


def revenue(con: Connection, delivery_id: str, window: Window = ALL_TIME) -> Result:
    """One row per currency: transactions, items, revenue, revenue_per_delivered (exact decimals)."""
    inner = metrics.revenue_sql(_DELIVERED, "p.delivery_id = ? AND p.ts >= ? AND p.ts < ?")
    sql = (
        "SELECT r.currency, r.transactions, r.items, r.revenue, r.revenue_per_delivered"
        f" FROM ({inner}) r ORDER BY r.currency NULLS LAST"
    )
    return query(con, sql, [delivery_id, delivery_id, *window.params()])


def anonymous_views(con: Connection, window: Window = ALL_TIME) -> dict[str, int]:
    """Page views without a token, counted apart (no delivery): page_views, visits, transactions."""
    row = fetch_one(con, metrics.anonymous_web_sql("p.ts >= ? AND p.ts < ?"), window.params())
    assert row is not None
    return {"page_views": int(row[0]), "visits": int(row[1]), "transactions": int(row[2])}
