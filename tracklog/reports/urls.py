"""URLs: clicks and distinct clickers per URL, label or category, summed across deliveries."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tracklog import metrics
from tracklog.errors import UsageError
from tracklog.reports.common import ALL_TIME, Window, limit_clause, prepare, query, require_delivery

# --by value -> the events column it groups on
GROUPINGS = {"url": "link_url", "label": "link_label", "category": "link_category"}


def urls(
    con: duckdb.DuckDBPyConnection,
    by: str = "url",
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> pa.Table:
    """Columns <by>, clicks, clickers (distinct delivery and recipient), deliveries, share; most clicked first."""
    if by not in GROUPINGS:
        raise UsageError(f"--by must be one of {', '.join(GROUPINGS)} (got {by!r})")
    prepare(con)
    params: list[object] = [*window.params()]
    where = "e.type = 'click' AND e.ts >= ? AND e.ts < ?"
    if delivery_id is not None:
        require_delivery(con, delivery_id)
        where += " AND e.delivery_id = ?"
        params.append(delivery_id)
    # recipient_key identifies a (delivery, recipient) pair across deliveries (metrics.py).
    inner = f"""
SELECT e.{GROUPINGS[by]} AS {by}, count(*) AS clicks, count(DISTINCT e.recipient_key) AS clickers,
    count(DISTINCT e.delivery_key) AS deliveries
FROM events e
WHERE {where}
GROUP BY e.{GROUPINGS[by]}
"""
    columns = [by, "clicks", "clickers", "deliveries"]
    sql = metrics.with_shares_sql(inner, columns, "clicks", f"{by} NULLS LAST")
    sql += f" ORDER BY clicks DESC, {by} NULLS LAST"
    return query(con, sql + limit_clause(limit), params)
