"""The recipient's Tracking tab: every counted tracking event of one recipient, newest first."""

from __future__ import annotations

import pyarrow as pa

from tracklog.engines import Connection
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
    con: Connection,
    recipient_id: str,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> pa.Table:
    """Columns ts, type, delivery, delivery_label, link_id, label, url (NULL where not a click)."""
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
    sql = f"""
SELECT e.ts, e.type, e.delivery_id AS delivery, e.delivery_label,
    e.link_id, e.link_label AS label, e.link_url AS url
FROM events e
WHERE e.recipient_id = ? AND e.ts >= ? AND e.ts < ?{" AND e.delivery_id = ?" if delivery_id is not None else ""}
ORDER BY e.ts DESC, e.delivery_id, e.type, e.link_id
"""
    params = [recipient_id, *window.params()] + ([delivery_id] if delivery_id is not None else [])
    return query(con, sql + limit_clause(limit), params)
