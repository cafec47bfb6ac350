"""The tracking definitions, written once: which hits count, how they resolve, every indicator.

The views (`hits_classified`, `accepted_hits`, `events`, `orphans`, `orphan_counts`,
`delivery_indicators`) and the SQL fragments the reports compose are all built here, in the
portable SQL subset (the same text runs on Spark SQL over the Parquet export).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tracklog import useragent

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
        "count(DISTINCT e.recipient_key) FILTER (WHERE e.type IN ("
        + ", ".join(f"'{t}'" for t in OPENING_TYPES)
        + "))"
    ),
    "clicks_total": "count(*) FILTER (WHERE e.type = 'click')",
    "clicks_unique": "count(DISTINCT e.recipient_key) FILTER (WHERE e.type = 'click')",
    "persons_clicked": f"count(DISTINCT {BROWSER_SQL}) FILTER (WHERE e.type = 'click')",
    "mirror_views": "count(*) FILTER (WHERE e.type = 'mirror')",
    "optout_clicks": "count(*) FILTER (WHERE e.type = 'optout')",
    "unsubscribes": "count(DISTINCT e.recipient_key) FILTER (WHERE e.type = 'unsubscribe')",
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
    all_time: bool = False,
) -> str:
    """One row per delivery (columns delivery, label, subject, sent_at, then INDICATORS).

    The where-clauses come from code (values are bound parameters, in the order event_where,
    hit_where, recipient_where, delivery_where): `e` is `events`, `h` is `hits_classified`,
    `r` is `recipients`, `d` is `deliveries`. `all_time`: the events and hits of every time
    (between EARLIEST and LATEST, as a report without --since/--until) from the
    `delivery_totals` view instead; event_where and hit_where are then not used.
    """
    ev = ",\n        ".join(f"{sql} AS {name}" for name, sql in EVENT_AGGREGATES.items())
    ex = ",\n        ".join(f"{sql} AS {name}" for name, sql in EXCLUDED_AGGREGATES.items())
    counted = ", ".join(f"coalesce(ev.{n}, 0) AS {n}" for n in EVENT_AGGREGATES)
    excluded = ", ".join(f"coalesce(ex.{n}, 0) AS {n}" for n in EXCLUDED_AGGREGATES)
    if all_time:
        aggregates = "ev AS (SELECT * FROM delivery_totals), ex AS (SELECT * FROM delivery_totals)"
    else:
        aggregates = f"""ev AS (
    SELECT e.delivery_id,
        {ev}
    FROM events e WHERE {event_where}
    GROUP BY e.delivery_id
), ex AS (
    SELECT h.delivery_id,
        {ex}
    FROM hits_classified h WHERE {hit_where}
    GROUP BY h.delivery_id
)"""
    return f"""
WITH {aggregates}, rc AS (
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


# A recipient's email domain, as the domain breakdown groups them.
def email_domain_sql(email: str) -> str:
    return f"lower(split_part({email}, '@', 2))"


# The dimensions of `report stats --by` parsed from the user agent (joined as `u`, a table of
# user_agent, browser, os, device), and the value of an event whose agent did not parse.
AGENT_DIMENSIONS = ("browser", "os", "device")
# The dimensions of `report urls --by`: the events column each groups on.
LINK_DIMENSIONS = {"url": "link_url", "label": "link_label", "category": "link_category"}


def agent_breakdown_sql(by: str, event_where: str, agents: str, per_delivery: bool = False) -> str:
    """Opens, clicks and readers per `by` value (one of AGENT_DIMENSIONS) of the events `e` in
    `event_where`, the agents parsed in the table `agents`; per delivery (column delivery_id
    first) for the stored breakdowns. readers: distinct (delivery, recipient) pairs, which
    recipient_key identifies, so per-delivery readers add up across deliveries. Grouped per
    reader first, then counted: faster than mixing count(DISTINCT ...) with other aggregates,
    which DuckDB plans as two passes over the events."""
    default = "other" if by == "device" else useragent.UNKNOWN
    delivery = "e.delivery_id, " if per_delivery else ""
    return f"""
SELECT {delivery.replace("e.", "p.")}p.{by}, CAST(sum(p.opens) AS BIGINT) AS opens,
    CAST(sum(p.clicks) AS BIGINT) AS clicks, count(*) AS readers
FROM (
    SELECT {delivery}coalesce(u.{by}, '{default}') AS {by}, e.recipient_key,
        count(*) FILTER (WHERE e.type = 'open') AS opens,
        count(*) FILTER (WHERE e.type = 'click') AS clicks
    FROM events e
    LEFT JOIN {agents} u ON u.user_agent = e.user_agent
    WHERE {event_where} AND e.type IN ('open', 'click')
    GROUP BY ALL
) p
GROUP BY ALL
"""


def link_clicks_sql(by: str, event_where: str, per_delivery: bool = False) -> str:
    """Clicks, clickers (distinct delivery and recipient) and deliveries per `by` value (a key
    of LINK_DIMENSIONS) of the counted clicks `e` in `event_where`; per delivery (column
    delivery_id first, deliveries then 1) for the stored breakdowns."""
    column = LINK_DIMENSIONS[by]
    delivery = "e.delivery_id, " if per_delivery else ""
    return f"""
SELECT {delivery}e.{column} AS {by}, count(*) AS clicks, count(DISTINCT e.recipient_key) AS clickers,
    count(DISTINCT e.delivery_key) AS deliveries
FROM events e
WHERE {event_where} AND e.type = 'click'
GROUP BY {delivery}e.{column}
"""


def domain_figures_sql(recipient_where: str, event_where: str, per_delivery: bool = False) -> str:
    """Per recipient email domain (column `domain`; per delivery, column delivery_id first, for
    the stored breakdowns): sent and delivered among the recipients `r` in `recipient_where`,
    opens_unique and clicks_unique among the events `e` in `event_where` (every event is of a
    manifest recipient), each recipient reduced to two flags first. Bound parameters: those of
    recipient_where, then event_where."""
    opening = ", ".join(f"'{t}'" for t in OPENING_TYPES)
    rd = "r.delivery_id, " if per_delivery else ""
    ed = "e.delivery_id, " if per_delivery else ""
    fd = "f.delivery_id, " if per_delivery else ""
    on = "a.delivery_id = t.delivery_id AND " if per_delivery else ""
    return f"""
SELECT {fd.replace("f.", "t.")}t.domain, t.sent, t.delivered,
    coalesce(a.opens_unique, 0) AS opens_unique, coalesce(a.clicks_unique, 0) AS clicks_unique
FROM (
    SELECT {rd}{email_domain_sql("r.email")} AS domain, count(*) AS sent,
        count(*) FILTER (WHERE r.status = 'sent') AS delivered
    FROM recipients r
    WHERE {recipient_where}
    GROUP BY ALL
) t
LEFT JOIN (
    SELECT {fd}f.email_domain, count(*) FILTER (WHERE f.opened = 1) AS opens_unique,
        count(*) FILTER (WHERE f.clicked = 1) AS clicks_unique
    FROM (
        SELECT {ed}e.email_domain, e.recipient_key,
            max(CASE WHEN e.type IN ({opening}) THEN 1 ELSE 0 END) AS opened,
            max(CASE WHEN e.type = 'click' THEN 1 ELSE 0 END) AS clicked
        FROM events e
        WHERE {event_where}
        GROUP BY {ed}e.email_domain, e.recipient_key
    ) f
    GROUP BY {fd}f.email_domain
) a ON {on}a.email_domain IS NOT DISTINCT FROM t.domain
"""


# Distinct recipients are counted on `recipient_key`, an integer per (delivery, recipient),
# unique across deliveries, and deliveries on `delivery_key`: integers hash and compare far
# faster than the text ids, and a key unique across deliveries needs no per-delivery grouping.
# Only their distinctness matters: the stored hit_facts numbers deliveries once and for all in
# `delivery_keys` (so the keys of other deliveries stay valid when a manifest is stored), the
# query-time definition numbers them by id; the counts are the same either way.
QUERY_TIME_DELIVERY_KEYS = (
    "(SELECT delivery_id, dense_rank() OVER (ORDER BY delivery_id) AS delivery_key FROM deliveries)"
)
_RECIPIENT_KEYS = """(
    SELECT r.delivery_id, r.recipient_id, r.email, r.status,
        CAST(dk.delivery_key AS BIGINT) * 4294967296
            + dense_rank() OVER (PARTITION BY r.delivery_id ORDER BY r.recipient_id) AS recipient_key
    FROM recipients r LEFT JOIN {delivery_keys} dk ON dk.delivery_id = r.delivery_id
    WHERE {recipient_where}
)"""


def hit_facts_sql(delivery_keys: str = QUERY_TIME_DELIVERY_KEYS, recipient_where: str = "TRUE") -> str:
    """Every stored hit resolved against the manifests: its event type and verdict, what the
    manifests say about it (NULLs where nothing matches) and its `resolution`: the verdict when
    the hit is not accepted, else the first id that failed to match ('delivery', 'recipient',
    'link': an orphan), 'trap' for a click on a trap link, or 'event': a counted tracking event
    (an accepted hit of a manifest recipient of its delivery; a click on a manifest link that is
    not a trap). The joins are what make reports slow, so refresh_derived() stores this relation
    in the `hit_facts` table; the views read it when it is current, else this query.
    `delivery_keys` (delivery_id, delivery_key) numbers the deliveries; `recipient_where` (on
    `r`, from code) limits the recipients numbered, for refresh_derived.
    """
    recipients = _RECIPIENT_KEYS.format(delivery_keys=delivery_keys, recipient_where=recipient_where)
    return f"""
SELECT h.source_id, h.line_no, h.ts, h.type, h.verdict, h.delivery_id, h.recipient_id, h.link_id,
    h.ip, h.user_agent, h.uid,
    d.delivery_id IS NOT NULL AS delivery_known,
    r.recipient_id IS NOT NULL AS recipient_known,
    l.link_id IS NOT NULL AS link_known,
    d.label AS delivery_label, d.sent_at,
    r.email, r.status AS recipient_status,
    l.label AS link_label, l.url AS link_url, l.category AS link_category, l.position AS link_position,
    CASE WHEN h.verdict <> 'accepted' THEN h.verdict
         WHEN d.delivery_id IS NULL THEN 'delivery'
         WHEN r.recipient_id IS NULL THEN 'recipient'
         WHEN h.type = 'click' AND l.link_id IS NULL THEN 'link'
         WHEN h.type = 'click' AND coalesce(l.category, '') = '{TRAP_CATEGORY}' THEN 'trap'
         ELSE 'event' END AS resolution,
    CAST(dk.delivery_key AS INTEGER) AS delivery_key, r.recipient_key,
    {email_domain_sql("r.email")} AS email_domain
FROM hits_classified h
LEFT JOIN deliveries d ON d.delivery_id = h.delivery_id
LEFT JOIN {delivery_keys} dk ON dk.delivery_id = h.delivery_id
LEFT JOIN {recipients} r ON r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id
LEFT JOIN links l ON l.delivery_id = h.delivery_id AND l.link_id = h.link_id
"""


HIT_FACTS_SQL = hit_facts_sql()
# The columns of hit_facts added after it was first stored (see refresh_derived).
FACTS_KEY_COLUMNS = ("delivery_key", "recipient_key", "email_domain")

ORPHAN_REASONS = ("delivery", "recipient", "link")

# Hit times are bounded by these in the all-time figures, as in a report without --since/--until.
EARLIEST = "TIMESTAMP '1970-01-01 00:00:00'"
LATEST = "TIMESTAMP '9999-12-31 00:00:00'"


def totals_sql(only_touched: bool = False) -> str:
    """All-time aggregates per delivery id: EVENT_AGGREGATES over events, EXCLUDED_AGGREGATES
    over hits_classified (the inner part of indicators_sql without --since/--until);
    `only_touched`: just the deliveries in the temp table _touched (for refresh_derived)."""
    touched = " AND {a}.delivery_id IN (SELECT delivery_id FROM _touched)" if only_touched else ""
    return f"""
SELECT coalesce(ev.delivery_id, ex.delivery_id) AS delivery_id,
    {", ".join(f"coalesce(ev.{n}, 0) AS {n}" for n in EVENT_AGGREGATES)},
    {", ".join(f"coalesce(ex.{n}, 0) AS {n}" for n in EXCLUDED_AGGREGATES)}
FROM (
    SELECT e.delivery_id, {", ".join(f"{sql} AS {name}" for name, sql in EVENT_AGGREGATES.items())}
    FROM events e WHERE e.ts >= {EARLIEST} AND e.ts < {LATEST} {touched.format(a="e")} GROUP BY e.delivery_id
) ev
FULL JOIN (
    SELECT h.delivery_id, {", ".join(f"{sql} AS {name}" for name, sql in EXCLUDED_AGGREGATES.items())}
    FROM hits_classified h WHERE h.ts >= {EARLIEST} AND h.ts < {LATEST} {touched.format(a="h")} GROUP BY h.delivery_id
) ex ON ex.delivery_id = ev.delivery_id
"""


def views(facts: str) -> dict[str, str]:
    """The view definitions, reading the resolved hits from `facts` (the `hit_facts` table, or
    HIT_FACTS_SQL as a subquery)."""
    return {
        # Every stored hit with its event type and verdict.
        "hits_classified": f"""
SELECT h.*, {TYPE_SQL} AS type, {VERDICT_SQL} AS verdict
FROM hits h
""",
        # Accepted hits with what the manifests say about them (NULLs where nothing matches yet:
        # resolved against the manifests as they are now, so a manifest stored after the logs
        # resolves them).
        "accepted_hits": f"""
SELECT f.ts, f.type, f.delivery_id, f.recipient_id, f.link_id, f.ip, f.user_agent, f.uid,
    f.delivery_known, f.recipient_known, f.link_known, f.delivery_label, f.sent_at,
    f.email, f.recipient_status, f.link_label, f.link_url, f.link_category, f.link_position
FROM {facts} f
WHERE f.verdict = 'accepted'
""",
        # The counted tracking events.
        "events": f"""
SELECT f.ts, f.type, f.delivery_id, f.delivery_label, f.sent_at,
    f.recipient_id, f.email, f.recipient_status,
    f.link_id, f.link_label, f.link_url, f.link_category, f.link_position,
    f.ip, f.user_agent, f.uid, f.delivery_key, f.recipient_key, f.email_domain
FROM {facts} f
WHERE f.resolution = 'event'
""",
        # Accepted hits that no manifest explains, with the first id that failed to match.
        "orphans": f"""
SELECT f.ts, f.type, f.delivery_id, f.recipient_id, f.link_id, f.ip, f.user_agent, f.uid,
    f.delivery_known, f.recipient_known, f.link_known, f.delivery_label, f.sent_at,
    f.email, f.recipient_status, f.link_label, f.link_url, f.link_category, f.link_position,
    f.resolution AS orphan_reason
FROM {facts} f
WHERE f.resolution IN ({", ".join(f"'{r}'" for r in ORPHAN_REASONS)})
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
        # All-time per-delivery aggregates (the slow part of `report deliveries`), stored by
        # refresh_derived() in `delivery_totals` when current.
        "delivery_totals": totals_sql() if facts != "hit_facts" else "SELECT * FROM delivery_totals_stored",
        "delivery_indicators": indicators_sql(),
    }


# The views as they resolve hits at query time (the definitions; what runs elsewhere, e.g. Spark).
VIEWS: dict[str, str] = views(f"({HIT_FACTS_SQL})")


def is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(rows and rows[0][0])


# What refresh_derived() maintains: the resolved hits, the all-time aggregates per delivery,
# the delivery numbering (never renumbered), the all-time breakdowns per delivery (by agent and
# link dimension: `dimension`, `value`; by email domain), the parsed user agents, and the state
# they were computed from (hit count, ua-parser version, each delivery's manifest version).
DERIVED_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS hit_facts AS SELECT * FROM ({HIT_FACTS_SQL}) f LIMIT 0;
CREATE TABLE IF NOT EXISTS delivery_keys (delivery_id VARCHAR NOT NULL, delivery_key INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS delivery_totals_stored AS SELECT * FROM ({totals_sql()}) t LIMIT 0;
CREATE TABLE IF NOT EXISTS derived_state (hits BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS derived_manifests (
    delivery_id VARCHAR NOT NULL, manifest_sha256 VARCHAR NOT NULL, loaded_at TIMESTAMP NOT NULL
);
ALTER TABLE derived_state ADD COLUMN IF NOT EXISTS agents_version VARCHAR;
CREATE TABLE IF NOT EXISTS user_agent_families (
    user_agent VARCHAR NOT NULL, browser VARCHAR, os VARCHAR, device VARCHAR
);
CREATE TABLE IF NOT EXISTS delivery_breakdowns (
    delivery_id VARCHAR NOT NULL, dimension VARCHAR NOT NULL, value VARCHAR,
    opens BIGINT NOT NULL, clicks BIGINT NOT NULL, readers BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery_domains AS SELECT * FROM ({domain_figures_sql("FALSE", "FALSE", True)}) d LIMIT 0;
"""

DERIVED_TABLES = (
    "hit_facts",
    "delivery_totals_stored",
    "derived_state",
    "derived_manifests",
    "delivery_keys",
    "user_agent_families",
    "delivery_breakdowns",
    "delivery_domains",
)

_STALE_MANIFESTS = """
SELECT delivery_id FROM (
    (SELECT delivery_id, manifest_sha256, loaded_at FROM deliveries
     EXCEPT SELECT delivery_id, manifest_sha256, loaded_at FROM derived_manifests)
    UNION ALL
    (SELECT delivery_id, manifest_sha256, loaded_at FROM derived_manifests
     EXCEPT SELECT delivery_id, manifest_sha256, loaded_at FROM deliveries)
) x
"""


def derived_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the derived tables reflect every stored hit and manifest and this version of
    ua-parser (a few milliseconds: row counts and the small deliveries table)."""
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
            " AND schema_name = 'main'"
        ).fetchall()
    }
    if not set(DERIVED_TABLES) <= tables:
        return False
    if not set(FACTS_KEY_COLUMNS) <= _columns(con, "hit_facts"):
        return False
    if "agents_version" not in _columns(con, "derived_state"):
        return False
    state = con.execute("SELECT hits, agents_version FROM derived_state").fetchall()
    hits = con.execute("SELECT count(*) FROM hits").fetchall()[0][0]
    if len(state) != 1 or state[0] != (hits, useragent.PARSER_VERSION):
        return False
    return not con.execute(f"SELECT 1 FROM ({_STALE_MANIFESTS}) s LIMIT 1").fetchall()


def refresh_derived(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the derived tables up to date, incrementally and idempotently: hits not yet
    resolved are added, a delivery whose manifest was stored or replaced since has its hits
    resolved again, and the totals and breakdowns of every delivery touched are recomputed
    (the breakdowns of every delivery when they were never built or ua-parser changed). One
    transaction; a no-op when nothing changed. Needs a writable connection; call it after an
    ingest run has stored its hits and after manifests are stored.
    """
    _drop_outdated_facts(con)
    ensure_views(con)
    con.execute(DERIVED_SCHEMA)
    if derived_is_current(con):
        ensure_views(con)
        return
    # stderr belongs to the caller's progress and warnings, not DuckDB's progress bar
    con.execute("SET enable_progress_bar = false")
    con.execute("BEGIN TRANSACTION")
    try:
        state = con.execute("SELECT agents_version FROM derived_state").fetchall()
        agents_changed = [r[0] for r in state] != [useragent.PARSER_VERSION]
        con.execute(f"CREATE OR REPLACE TEMP TABLE _changed AS {_STALE_MANIFESTS}")
        con.execute("DELETE FROM hit_facts WHERE delivery_id IN (SELECT delivery_id FROM _changed)")
        con.execute("""
INSERT INTO delivery_keys
SELECT d.delivery_id, (SELECT coalesce(max(delivery_key), 0) FROM delivery_keys)
    + row_number() OVER (ORDER BY d.delivery_id)
FROM deliveries d WHERE d.delivery_id NOT IN (SELECT delivery_id FROM delivery_keys)""")
        # Sources with hits not resolved yet (hits are only ever appended).
        con.execute("""
CREATE OR REPLACE TEMP TABLE _sources AS
SELECT h.source_id FROM (SELECT source_id, count(*) AS n FROM hits GROUP BY source_id) h
LEFT JOIN (SELECT source_id, count(*) AS n FROM hit_facts GROUP BY source_id) f ON f.source_id = h.source_id
WHERE f.n IS NULL OR f.n <> h.n""")
        new_hits = """
SELECT * FROM hits_classified h
WHERE h.source_id IN (SELECT source_id FROM _sources)
    AND NOT EXISTS (SELECT 1 FROM hit_facts f WHERE f.source_id = h.source_id AND f.line_no = h.line_no)
"""
        con.execute(f"""
CREATE OR REPLACE TEMP TABLE _touched AS
SELECT delivery_id FROM _changed
UNION SELECT DISTINCT h.delivery_id FROM ({new_hits}) h""")
        # In the order of the hits (roughly time), unsorted: sorting a big batch by delivery cost
        # half of the refresh and made no report faster (measured on 10M hits, bench_reports.py).
        facts = hit_facts_sql("delivery_keys", "r.delivery_id IN (SELECT delivery_id FROM _touched)").replace(
            "FROM hits_classified h", f"FROM ({new_hits}) h"
        )
        con.execute(f"INSERT INTO hit_facts SELECT * FROM ({facts}) f")
        con.execute("DELETE FROM derived_state")
        con.execute(
            "INSERT INTO derived_state (hits, agents_version) SELECT count(*), ? FROM hits",
            [useragent.PARSER_VERSION],
        )
        con.execute("DELETE FROM derived_manifests")
        con.execute(
            "INSERT INTO derived_manifests SELECT delivery_id, manifest_sha256, loaded_at FROM deliveries"
        )
        ensure_views(con)
        con.execute(
            "DELETE FROM delivery_totals_stored WHERE delivery_id IN (SELECT delivery_id FROM _touched)"
        )
        con.execute(f"INSERT INTO delivery_totals_stored {totals_sql(only_touched=True)}")
        _refresh_breakdowns(con, every_delivery=agents_changed)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute(
            "DROP TABLE IF EXISTS _changed; DROP TABLE IF EXISTS _sources; DROP TABLE IF EXISTS _touched;"
            " DROP TABLE IF EXISTS _rebreak"
        )
    ensure_views(con)


def _refresh_breakdowns(con: duckdb.DuckDBPyConnection, every_delivery: bool) -> None:
    """Recompute the stored breakdowns of the deliveries in _touched (of every delivery when
    `every_delivery`, the parsed user agents then parsed again), with the definitions the
    reports use at query time, over all-time events as in totals_sql()."""
    if every_delivery:
        con.execute("DELETE FROM user_agent_families")
        con.execute("""
CREATE OR REPLACE TEMP TABLE _rebreak AS
SELECT delivery_id FROM deliveries UNION SELECT delivery_id FROM delivery_breakdowns
UNION SELECT delivery_id FROM delivery_domains""")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE _rebreak AS SELECT delivery_id FROM _touched")
    scope = f"e.ts >= {EARLIEST} AND e.ts < {LATEST} AND e.delivery_id IN (SELECT delivery_id FROM _rebreak)"
    # Only user agents never seen are parsed (in Python, once per distinct string).
    unseen = con.execute(f"""
SELECT DISTINCT e.user_agent FROM events e
WHERE {scope} AND e.user_agent IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM user_agent_families u WHERE u.user_agent = e.user_agent)""").fetchall()
    con.register("_new_agents", useragent.agents_table([r[0] for r in unseen]))
    try:
        con.execute("INSERT INTO user_agent_families SELECT * FROM _new_agents")
    finally:
        con.unregister("_new_agents")
    for table in ("delivery_breakdowns", "delivery_domains"):
        con.execute(f"DELETE FROM {table} WHERE delivery_id IN (SELECT delivery_id FROM _rebreak)")
    for by in AGENT_DIMENSIONS:
        con.execute(f"""
INSERT INTO delivery_breakdowns
SELECT b.delivery_id, '{by}', b.{by}, b.opens, b.clicks, b.readers
FROM ({agent_breakdown_sql(by, scope, "user_agent_families", per_delivery=True)}) b""")
    for by in LINK_DIMENSIONS:
        con.execute(f"""
INSERT INTO delivery_breakdowns
SELECT b.delivery_id, '{by}', b.{by}, 0, b.clicks, b.clickers
FROM ({link_clicks_sql(by, scope, per_delivery=True)}) b""")
    recipients = "r.delivery_id IN (SELECT delivery_id FROM _rebreak)"
    con.execute(f"INSERT INTO delivery_domains {domain_figures_sql(recipients, scope, per_delivery=True)}")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database()"
            " AND schema_name = 'main' AND table_name = ?",
            [table],
        ).fetchall()
    }


def _drop_outdated_facts(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the derived tables when `hit_facts` predates a column of hit_facts_sql() (a
    database of an earlier version), so that refresh_derived() rebuilds them from the hits:
    a full rebuild, as long as a first build (some 30 s on 10 million hits)."""
    columns = _columns(con, "hit_facts")
    if columns and not set(FACTS_KEY_COLUMNS) <= columns:
        con.execute("DROP TABLE IF EXISTS hit_facts; DROP TABLE IF EXISTS delivery_totals_stored")
        con.execute("DROP TABLE IF EXISTS derived_state; DROP TABLE IF EXISTS derived_manifests")


def ensure_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or refresh) the metric views.

    On a writable connection they are persistent, so ad-hoc SQL on the file sees them; on a
    read-only one they are TEMP views (DuckDB allows those), which take precedence over any
    persistent ones, so a reader always uses this version's definitions. They read the stored
    `hit_facts` when it is current, else resolve the hits at query time (same results, slower).
    """
    temp = "TEMP " if is_read_only(con) else ""
    facts = "hit_facts" if derived_is_current(con) else f"({HIT_FACTS_SQL})"
    for name, sql in views(facts).items():
        con.execute(f"CREATE OR REPLACE {temp}VIEW {name} AS {sql}")


def orphan_counts(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Orphan hits per delivery id (columns of the `orphan_counts` view), most first."""
    ensure_views(con)
    return con.sql("SELECT * FROM orphan_counts ORDER BY orphan_hits DESC, delivery_id").to_arrow_table()
