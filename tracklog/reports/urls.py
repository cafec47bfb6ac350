"""URLs: clicks and distinct clickers per URL, label or category, summed across deliveries."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tracklog import metrics
from tracklog.errors import UsageError
from tracklog.reports.common import (
    ALL_TIME,
    Window,
    limit_clause,
    prepare,
    query,
    require_delivery,
    stored_breakdowns,
)

GROUPINGS = metrics.LINK_DIMENSIONS


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
    where = "e.ts >= ? AND e.ts < ?"
    if delivery_id is not None:
        require_delivery(con, delivery_id)
        where += " AND e.delivery_id = ?"
        params.append(delivery_id)
    if stored_breakdowns(con, window):
        # All time: the per-delivery clicks refresh_derived() stored, summed (exact: a clicker is
        # one delivery's recipient, and each stored row is one delivery with clicks).
        inner = f"""
SELECT b.value AS {by}, CAST(sum(b.clicks) AS BIGINT) AS clicks, CAST(sum(b.readers) AS BIGINT) AS clickers,
    count(*) AS deliveries
FROM delivery_breakdowns b
WHERE b.dimension = '{by}'{"" if delivery_id is None else " AND b.delivery_id = ?"}
GROUP BY b.value
"""
        params = [] if delivery_id is None else [delivery_id]
    else:
        inner = metrics.link_clicks_sql(by, where)
    columns = [by, "clicks", "clickers", "deliveries"]
    sql = metrics.with_shares_sql(inner, columns, "clicks", f"{by} NULLS LAST")
    sql += f" ORDER BY clicks DESC, {by} NULLS LAST"
    return query(con, sql + limit_clause(limit), params)
