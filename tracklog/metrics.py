"""The tracking definitions, written once: which hits count, how they resolve, every indicator.

The views (`hits_classified`, `accepted_hits`, `events`, `orphans`, `orphan_counts`,
`delivery_indicators`) and the SQL fragments the reports compose are all built here, in the
portable SQL subset (the same text runs on Spark SQL over the Parquet export).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

# The one place where machine opens (mail-client prefetch) and bot clicks (link scanners) will
# be recognised. Until classification exists nothing is flagged: machine_opens and bot_clicks
# are present and 0. The expression sees one row of `hits` as `h`.
AUTOMATED_SQL = "FALSE"

# Event type of a hit: the route kind, with the unsubscribe route split by method (a GET is a
# person following the opt-out link, a POST is the mailbox provider's RFC 8058 one-click).
TYPE_SQL = (
    "CASE WHEN h.kind = 'unsubscribe' AND upper(h.method) = 'POST' THEN 'unsubscribe' "
    "WHEN h.kind = 'unsubscribe' THEN 'optout' ELSE h.kind END"
)

# rejected: bad or missing signature; failed: 4xx/5xx (an unknown status counts as served);
# automated: flagged machine/bot activity; accepted: everything else, the counted hits.
VERDICT_SQL = (
    "CASE WHEN h.sig_status NOT IN ('valid', 'unchecked') THEN 'rejected' "
    "WHEN h.status >= 400 THEN 'failed' "
    f"WHEN {AUTOMATED_SQL} THEN 'automated' "
    "ELSE 'accepted' END"
)

TRAP_CATEGORY = "trap"

# Event types that prove a person opened the message (the one-click unsubscribe POST does not:
# the mailbox provider sends it, not the reader's browser).
OPENING_TYPES = ("open", "click", "mirror", "optout")

# A browser: the userid cookie when logged, else the pair (client IP, user agent). A tuple so
# that count(DISTINCT ...) counts rows whose IP or user agent is NULL (Spark agrees on tuples).
BROWSER_SQL = "(e.uid, CASE WHEN e.uid IS NULL THEN e.ip END, CASE WHEN e.uid IS NULL THEN e.user_agent END)"


def tenths_sql(num: str, den: str) -> str:
    """num / den rounded half up to one decimal, as a DOUBLE; 0 when den is 0.

    Integer arithmetic then floor, so DuckDB and Spark give the same value (no decimal or
    double rounding modes involved) and so does an independent Python computation.
    """
    return (
        f"CASE WHEN ({den}) = 0 THEN CAST(0 AS DOUBLE) "
        f"ELSE floor((20 * ({num}) + ({den})) / (2 * ({den}))) / 10 END"
    )


def pct_sql(num: str, den: str) -> str:
    """A percentage with one decimal, 0 when the denominator is 0."""
    return tenths_sql(f"100 * ({num})", den)


def with_shares_sql(inner: str, columns: list[str], value: str, order: str, partition: str = "") -> str:
    """SELECT `columns` of the query `inner`, plus `share`: `value` as a % of its total within
    `partition` ('' for the whole result), one decimal, adding up to exactly 100.0.

    Largest-remainder rounding: each row gets its share rounded down to a tenth, then the
    tenths still missing go to the rows with the largest remainders (ties broken by `order`).
    Staged in three selects because window functions do not nest.
    """
    over = f"PARTITION BY {partition}" if partition else ""
    cols = ", ".join(columns)
    return f"""
SELECT {cols},
    CASE WHEN s2._total = 0 THEN CAST(0 AS DOUBLE)
         ELSE (s2._ft + CASE WHEN s2._rank <= 1000 - s2._sum_ft THEN 1 ELSE 0 END) / 10 END AS share
FROM (
    SELECT s1.*, sum(s1._ft) OVER ({over}) AS _sum_ft,
        row_number() OVER ({over} ORDER BY 1000 * s1.{value} - s1._ft * s1._total DESC, {order}) AS _rank
    FROM (
        SELECT q.*, sum(q.{value}) OVER ({over}) AS _total,
            CASE WHEN sum(q.{value}) OVER ({over}) = 0 THEN 0
                 ELSE floor(1000 * q.{value} / sum(q.{value}) OVER ({over})) END AS _ft
        FROM ({inner}) q
    ) s1
) s2
"""


# Per-delivery aggregates over `events AS e`; the JSON field names of the indicators.
EVENT_AGGREGATES: dict[str, str] = {
    "opens_total": "count(*) FILTER (WHERE e.type = 'open')",
    "opens_unique": (
        "count(DISTINCT e.recipient_id) FILTER (WHERE e.type IN ("
        + ", ".join(f"'{t}'" for t in OPENING_TYPES)
        + "))"
    ),
    "clicks_total": "count(*) FILTER (WHERE e.type = 'click')",
    "clicks_unique": "count(DISTINCT e.recipient_id) FILTER (WHERE e.type = 'click')",
    "persons_clicked": f"count(DISTINCT {BROWSER_SQL}) FILTER (WHERE e.type = 'click')",
    "mirror_views": "count(*) FILTER (WHERE e.type = 'mirror')",
    "optout_clicks": "count(*) FILTER (WHERE e.type = 'optout')",
    "unsubscribes": "count(DISTINCT e.recipient_id) FILTER (WHERE e.type = 'unsubscribe')",
}

# Per-delivery counts of the hits that are shown but never counted, over `hits_classified AS h`.
EXCLUDED_AGGREGATES: dict[str, str] = {
    "rejected_hits": "count(*) FILTER (WHERE h.verdict = 'rejected')",
    "failed_hits": "count(*) FILTER (WHERE h.verdict = 'failed')",
    "machine_opens": "count(*) FILTER (WHERE h.verdict = 'automated' AND h.type = 'open')",
    "bot_clicks": "count(*) FILTER (WHERE h.verdict = 'automated' AND h.type = 'click')",
}

# Field order of the Tracking indicators (the JSON names of issue 4).
INDICATORS = (
    "sent",
    "delivered",
    "opens_total",
    "opens_unique",
    "clicks_total",
    "clicks_unique",
    "persons_clicked",
    "forwards_estimate",
    "open_rate",
    "click_rate",
    "raw_reactivity",
    "mirror_views",
    "optout_clicks",
    "unsubscribes",
    "rejected_hits",
    "failed_hits",
    "machine_opens",
    "bot_clicks",
)


def indicators_sql(
    event_where: str = "TRUE",
    hit_where: str = "TRUE",
    recipient_where: str = "TRUE",
    delivery_where: str = "TRUE",
) -> str:
    """One row per delivery (columns delivery, label, subject, sent_at, then INDICATORS).

    The where-clauses come from code (values are bound parameters, in the order event_where,
    hit_where, recipient_where, delivery_where): `e` is `events`, `h` is `hits_classified`,
    `r` is `recipients`, `d` is `deliveries`.
    """
    ev = ",\n        ".join(f"{sql} AS {name}" for name, sql in EVENT_AGGREGATES.items())
    ex = ",\n        ".join(f"{sql} AS {name}" for name, sql in EXCLUDED_AGGREGATES.items())
    counted = ", ".join(f"coalesce(ev.{n}, 0) AS {n}" for n in EVENT_AGGREGATES)
    excluded = ", ".join(f"coalesce(ex.{n}, 0) AS {n}" for n in EXCLUDED_AGGREGATES)
    return f"""
WITH ev AS (
    SELECT e.delivery_id,
        {ev}
    FROM events e WHERE {event_where}
    GROUP BY e.delivery_id
), ex AS (
    SELECT h.delivery_id,
        {ex}
    FROM hits_classified h WHERE {hit_where}
    GROUP BY h.delivery_id
), rc AS (
    SELECT r.delivery_id, count(*) AS sent, count(*) FILTER (WHERE r.status = 'sent') AS delivered
    FROM recipients r WHERE {recipient_where} GROUP BY r.delivery_id
), base AS (
    SELECT d.delivery_id, d.label, d.subject, d.sent_at,
        coalesce(rc.sent, 0) AS sent, coalesce(rc.delivered, 0) AS delivered,
        {counted}, {excluded}
    FROM deliveries d
    LEFT JOIN rc ON rc.delivery_id = d.delivery_id
    LEFT JOIN ev ON ev.delivery_id = d.delivery_id
    LEFT JOIN ex ON ex.delivery_id = d.delivery_id
    WHERE {delivery_where}
)
SELECT delivery_id AS delivery, label, subject, sent_at,
    sent, delivered, opens_total, opens_unique, clicks_total, clicks_unique, persons_clicked,
    CASE WHEN persons_clicked > clicks_unique THEN persons_clicked - clicks_unique ELSE 0 END
        AS forwards_estimate,
    {pct_sql("opens_unique", "delivered")} AS open_rate,
    {pct_sql("clicks_unique", "delivered")} AS click_rate,
    {pct_sql("clicks_unique", "opens_unique")} AS raw_reactivity,
    mirror_views, optout_clicks, unsubscribes, rejected_hits, failed_hits, machine_opens, bot_clicks
FROM base
"""


VIEWS: dict[str, str] = {
    # Every stored hit with its event type and verdict.
    "hits_classified": f"""
SELECT h.*, {TYPE_SQL} AS type, {VERDICT_SQL} AS verdict
FROM hits h
""",
    # Accepted hits with what the manifests say about them (NULLs where nothing matches yet:
    # the join happens at query time, so a manifest stored after the logs resolves them).
    "accepted_hits": """
SELECT h.ts, h.type, h.delivery_id, h.recipient_id, h.link_id, h.ip, h.user_agent, h.uid,
    d.delivery_id IS NOT NULL AS delivery_known,
    r.recipient_id IS NOT NULL AS recipient_known,
    l.link_id IS NOT NULL AS link_known,
    d.label AS delivery_label, d.sent_at,
    r.email, r.status AS recipient_status,
    l.label AS link_label, l.url AS link_url, l.category AS link_category, l.position AS link_position
FROM hits_classified h
LEFT JOIN deliveries d ON d.delivery_id = h.delivery_id
LEFT JOIN recipients r ON r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id
LEFT JOIN links l ON l.delivery_id = h.delivery_id AND l.link_id = h.link_id
WHERE h.verdict = 'accepted'
""",
    # The counted tracking events: accepted hits of a manifest recipient of their delivery
    # (clicks: on a manifest link that is not a trap).
    "events": f"""
SELECT h.ts, h.type, h.delivery_id, d.label AS delivery_label, d.sent_at,
    h.recipient_id, r.email, r.status AS recipient_status,
    h.link_id, l.label AS link_label, l.url AS link_url, l.category AS link_category,
    l.position AS link_position,
    h.ip, h.user_agent, h.uid
FROM hits_classified h
JOIN deliveries d ON d.delivery_id = h.delivery_id
JOIN recipients r ON r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id
LEFT JOIN links l ON l.delivery_id = h.delivery_id AND l.link_id = h.link_id
WHERE h.verdict = 'accepted'
    AND (h.type <> 'click' OR (l.link_id IS NOT NULL AND coalesce(l.category, '') <> '{TRAP_CATEGORY}'))
""",
    # Accepted hits that no manifest explains, with the first id that failed to match.
    "orphans": """
SELECT a.*,
    CASE WHEN NOT a.delivery_known THEN 'delivery'
         WHEN NOT a.recipient_known THEN 'recipient'
         ELSE 'link' END AS orphan_reason
FROM accepted_hits a
WHERE NOT a.delivery_known OR NOT a.recipient_known OR (a.type = 'click' AND NOT a.link_known)
""",
    "orphan_counts": """
SELECT o.delivery_id,
    bool_or(o.delivery_known) AS delivery_known,
    count(*) AS orphan_hits,
    count(*) FILTER (WHERE o.orphan_reason = 'delivery') AS unknown_delivery,
    count(*) FILTER (WHERE o.orphan_reason = 'recipient') AS unknown_recipient,
    count(*) FILTER (WHERE o.orphan_reason = 'link') AS unknown_link
FROM orphans o
GROUP BY o.delivery_id
""",
    "delivery_indicators": indicators_sql(),
}


def is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(rows and rows[0][0])


def ensure_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or refresh) the metric views.

    On a writable connection they are persistent, so ad-hoc SQL on the file sees them; on a
    read-only one they are TEMP views (DuckDB allows those), which take precedence over any
    persistent ones, so a reader always uses this version's definitions.
    """
    temp = "TEMP " if is_read_only(con) else ""
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE {temp}VIEW {name} AS {sql}")


def orphan_counts(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Orphan hits per delivery id (columns of the `orphan_counts` view), most first."""
    ensure_views(con)
    return con.sql("SELECT * FROM orphan_counts ORDER BY orphan_hits DESC, delivery_id").to_arrow_table()
