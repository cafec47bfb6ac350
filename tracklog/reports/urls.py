"""URLs: clicks and distinct clickers per URL, label or category, summed across deliveries."""

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

GROUPINGS = metrics.LINK_DIMENSIONS


def urls(
    con: Connection,
    by: str = "url",
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> Result:
    """Columns <by>, clicks, clickers (distinct delivery and recipient), deliveries, share; most clicked first."""
    if by not in GROUPINGS:
        raise UsageError(f"--by must be one of {', '.join(GROUPINGS)} (got {by!r})")
    figures, params = derived.dimensions(by, window.bounds())
    where = ""
    if delivery_id is not None:
        require_delivery(con, delivery_id)
        where = " WHERE b.delivery_id = ?"
        params = [*params, delivery_id]
    # A clicker is one delivery's recipient, so the clickers of deliveries add up; each row of
    # `figures` is one delivery with clicks.
    inner = f"""
SELECT b.value AS {by}, CAST(sum(b.clicks) AS BIGINT) AS clicks, CAST(sum(b.readers) AS BIGINT) AS clickers,
    count(*) AS deliveries
FROM ({figures}) b{where}
GROUP BY b.value
"""
    columns = [by, "clicks", "clickers", "deliveries"]
    sql = metrics.with_shares_sql(inner, columns, "clicks", f"{by} NULLS LAST")
    sql += f" ORDER BY clicks DESC, {by} NULLS LAST"
    return query(con, sql + limit_clause(limit), params)
