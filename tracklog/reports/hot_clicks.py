"""Hot clicks: the links of one delivery in message order with their clicks, clickers and share.

Trap links are never shown; shares are of the delivery's clicks_total, so they add up to 100.
"""

from __future__ import annotations

from tracklog import derived, metrics
from tracklog.engines import Connection
from tracklog.reports.common import ALL_TIME, Window, limit_clause, query, require_delivery
from tracklog.result import Result

COLUMNS = ["position", "link_id", "label", "url", "clicks", "clickers"]


def hot_clicks(
    con: Connection,
    delivery_id: str,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> Result:
    """Columns position, link_id, label, url, clicks, clickers, share."""
    require_delivery(con, delivery_id)
    links, params = derived.dimensions("link", window.bounds())
    inner = f"""
SELECT l.position, l.link_id, l.label, l.url,
    coalesce(c.clicks, 0) AS clicks, coalesce(c.readers, 0) AS clickers
FROM links l
LEFT JOIN ({links}) c ON c.delivery_id = l.delivery_id AND c.value = l.link_id
WHERE l.delivery_id = ? AND coalesce(l.category, '') <> '{metrics.TRAP_CATEGORY}'
"""
    sql = metrics.with_shares_sql(inner, COLUMNS, "clicks", "position") + " ORDER BY position"
    return query(con, sql + limit_clause(limit), [*params, delivery_id])
