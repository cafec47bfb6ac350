"""The recipient's Tracking tab: every tracking event of one recipient, newest first, each with
its class (human, machine_open, bot_click) and reasons; people's events only on request."""

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
    humans_only: bool = False,
) -> pa.Table:
    """Columns ts, type, class, reasons, delivery, delivery_label, link_id, label, url (NULL
    where not a click): the counted events and the machines' hits (`humans_only`: the counted
    events only) of a manifest recipient."""
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
    shown = "h.resolution = 'event'" if humans_only else "h.resolution IN ('event', 'automated')"
    sql = f"""
SELECT h.ts, h.type, coalesce(h.class, 'human') AS class, h.reasons, h.delivery_id AS delivery,
    d.label AS delivery_label, h.link_id, l.label, l.url
FROM hits_classified h
JOIN recipients r ON r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id
JOIN deliveries d ON d.delivery_id = h.delivery_id
LEFT JOIN links l ON l.delivery_id = h.delivery_id AND l.link_id = h.link_id
WHERE h.recipient_id = ? AND h.ts >= ? AND h.ts < ? AND {shown}{" AND h.delivery_id = ?" if delivery_id is not None else ""}
ORDER BY h.ts DESC, h.delivery_id, h.type, h.link_id
"""
    params = [recipient_id, *window.params()] + ([delivery_id] if delivery_id is not None else [])
    return query(con, sql + limit_clause(limit), params)
