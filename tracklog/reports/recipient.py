"""The recipient's Tracking tab: every counted tracking event of one recipient, newest first."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tracklog.errors import NotFoundError
from tracklog.reports.common import (
    ALL_TIME,
    Window,
    fetch_one,
    limit_clause,
    query,
    require_delivery,
)


def recipient_events(
    con: duckdb.DuckDBPyConnection,
    recipient_id: str,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> pa.Table:
    """Columns ts, type, delivery, delivery_label, link_id, label, url (NULL where not a click),
    amount and currency (of a transaction: a page tag with an amount; a page's tag is link_id)."""
    where = "r.recipient_id = ?"
    params: list[object] = [recipient_id]
    if delivery_id is not None:
        require_delivery(con, delivery_id)
        where += " AND r.delivery_id = ?"
        params.append(delivery_id)
    known = fetch_one(con, f"SELECT count(*) FROM recipients r WHERE {where}", params)
    if not known or not known[0]:
        scope = f"delivery {delivery_id!r}" if delivery_id is not None else "any delivery manifest"
        raise NotFoundError(f"recipient {recipient_id!r} is not in {scope}")
    only = " AND e.delivery_id = ?" if delivery_id is not None else ""
    # the message events, then the page views of the site (web tracking): 'transaction' for a
    # page tag with an amount, the tag in link_id
    sql = f"""
SELECT x.ts, x.type, x.delivery, x.delivery_label, x.link_id, x.label, x.url, x.amount, x.currency FROM (
    SELECT e.ts, e.type, e.delivery_id AS delivery, e.delivery_label,
        e.link_id, e.link_label AS label, e.link_url AS url,
        CAST(NULL AS DECIMAL(18,4)) AS amount, CAST(NULL AS VARCHAR) AS currency
    FROM events e
    WHERE e.type <> 'page' AND e.recipient_id = ? AND e.ts >= ? AND e.ts < ?{only}
    UNION ALL
    SELECT e.ts, CASE WHEN e.amount IS NOT NULL THEN 'transaction' ELSE 'page' END, e.delivery_id,
        d.label, e.tag, NULL, NULL, e.amount, e.currency
    FROM page_events e LEFT JOIN deliveries d ON d.delivery_id = e.delivery_id
    WHERE NOT e.anonymous AND e.recipient_id = ? AND e.ts >= ? AND e.ts < ?{only}
) x
ORDER BY x.ts DESC, x.delivery, x.type, x.link_id
"""
    params = ([recipient_id, *window.params()] + ([delivery_id] if delivery_id is not None else [])) * 2
    return query(con, sql + limit_clause(limit), params)
