"""The recipient's Tracking tab: every tracking event of one recipient, newest first, each with
its class (human, machine_open, bot_click) and reasons; people's events only on request."""

from __future__ import annotations

from tracklog import metrics
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
from tracklog.result import Result


def recipient_events(
    con: Connection,
    recipient_id: str,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
    humans_only: bool = False,
) -> Result:
    """Columns ts, type, class, reasons, delivery, delivery_label, link_id, label, url (NULL
    where not a click), amount and currency (of a transaction: a page tag with an amount; a
    page's tag is link_id): the counted events, the site's page views and the machines' hits
    (`humans_only`: the counted events and page views only) of a manifest recipient."""
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
    only = " AND c.delivery_id = ?" if delivery_id is not None else ""
    # The recipient's hits (one scan of the hits), then: the message's hits, and the page views of
    # the site (web tracking; the definition of page_events over these hits): 'transaction' for
    # a page tag with an amount, the tag in link_id
    sql = f"""
WITH rh AS (SELECT * FROM hits_classified c WHERE c.recipient_id = ? AND c.ts >= ? AND c.ts < ?{only})
SELECT x.ts, x.type, x.class, x.reasons, x.delivery, x.delivery_label, x.link_id, x.label, x.url,
    x.amount, x.currency FROM (
    SELECT h.ts, h.type, coalesce(h.class, 'human') AS class, h.reasons, h.delivery_id AS delivery,
        d.label AS delivery_label, h.link_id, l.label, l.url,
        CAST(NULL AS DECIMAL(18,4)) AS amount, CAST(NULL AS STRING) AS currency
    FROM rh h
    JOIN recipients r ON r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id
    JOIN deliveries d ON d.delivery_id = h.delivery_id
    LEFT JOIN links l ON l.delivery_id = h.delivery_id AND l.link_id = h.link_id
    WHERE h.type <> 'page' AND {shown}
    UNION ALL
    SELECT e.ts, CASE WHEN e.amount IS NOT NULL THEN 'transaction' ELSE 'page' END, 'human', NULL,
        e.delivery_id, d.label, e.tag, NULL, NULL, e.amount, e.currency
    FROM ({metrics.page_events_sql("rh")}) e LEFT JOIN deliveries d ON d.delivery_id = e.delivery_id
    WHERE NOT e.anonymous
) x
ORDER BY x.ts DESC, x.delivery, x.type, x.link_id
"""
    params = [recipient_id, *window.params()] + ([delivery_id] if delivery_id is not None else [])
    return query(con, sql + limit_clause(limit), params)
