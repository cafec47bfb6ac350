"""Click streams of one delivery: for recipients who clicked more than once, the most common
sequences of links clicked and the link-to-link transitions (from -> to).

A sequence shows the first MAX_STEPS clicks (then '…'): building whole paths needs an ordered
aggregate, which is outside the portable SQL subset.
"""

from __future__ import annotations

from tracklog import metrics
from tracklog.engines import Connection
from tracklog.reports.common import ALL_TIME, Window, limit_clause, query, require_delivery
from tracklog.result import Result

MAX_STEPS = 6
SEPARATOR = " > "

_CLICKS = """
SELECT e.recipient_id, e.link_id, e.link_label,
    row_number() OVER (PARTITION BY e.recipient_id ORDER BY e.ts, e.link_id) AS step,
    count(*) OVER (PARTITION BY e.recipient_id) AS clicks,
    lead(e.link_id) OVER (PARTITION BY e.recipient_id ORDER BY e.ts, e.link_id) AS next_link
FROM events e
WHERE e.type = 'click' AND e.delivery_id = ? AND e.ts >= ? AND e.ts < ?
"""


def sequences(
    con: Connection, delivery_id: str, window: Window = ALL_TIME, limit: int | None = None
) -> Result:
    """Columns sequence (link ids joined by ' > '), recipients, share; most common first."""
    require_delivery(con, delivery_id)
    steps = ", ".join(f"max(CASE WHEN c.step = {i} THEN c.link_id END)" for i in range(1, MAX_STEPS + 1))
    inner = f"""
SELECT p.sequence, count(*) AS recipients
FROM (
    SELECT c.recipient_id,
        concat_ws('{SEPARATOR}', {steps}, CASE WHEN max(c.clicks) > {MAX_STEPS} THEN '…' END) AS sequence
    FROM ({_CLICKS}) c
    WHERE c.clicks > 1
    GROUP BY c.recipient_id
) p
GROUP BY p.sequence
"""
    sql = metrics.with_shares_sql(inner, ["sequence", "recipients"], "recipients", "sequence")
    sql += " ORDER BY recipients DESC, sequence"
    return query(con, sql + limit_clause(limit), [delivery_id, *window.params()])


def transitions(
    con: Connection, delivery_id: str, window: Window = ALL_TIME, limit: int | None = None
) -> Result:
    """Columns from_link, from_label, to_link, to_label, count; most frequent first."""
    require_delivery(con, delivery_id)
    sql = f"""
SELECT c.link_id AS from_link, c.link_label AS from_label, c.next_link AS to_link,
    l.label AS to_label, count(*) AS count
FROM ({_CLICKS}) c
LEFT JOIN links l ON l.delivery_id = ? AND l.link_id = c.next_link
WHERE c.next_link IS NOT NULL
GROUP BY c.link_id, c.link_label, c.next_link, l.label
ORDER BY count DESC, from_link, to_link
"""
    return query(con, sql + limit_clause(limit), [delivery_id, *window.params(), delivery_id])
