"""The tracking definitions, written once: which hits count, how they resolve, every indicator.

Pure SQL text in the portable subset (the same text runs on Spark SQL over the Parquet export):
no connection, no cache. `tracklog.derived` stores what these define (per delivery, all time)
and hands reports either the stored rows or, for a time window, these definitions over the
events; both have the same columns, so each report is one query.
"""

from __future__ import annotations

from tracklog import useragent
from tracklog.schema import HIT_COLUMNS


def automated_sql(h: str = "h") -> str:
    """Whether the hit `h` is a machine's: its stored class (tracklog.classify, which applies
    the rules of README "Machine opens and bot clicks") is machine_open or bot_click. A hit not
    classified yet counts as a person's."""
    return f"coalesce({h}.class, 'human') <> 'human'"


def type_sql(h: str = "h") -> str:
    """Event type of the hit `h`: the route kind, with the unsubscribe route split by method (a
    GET is a person following the opt-out link, a POST is the mailbox provider's RFC 8058
    one-click)."""
    return (
        f"CASE WHEN {h}.kind = 'unsubscribe' AND upper({h}.method) = 'POST' THEN 'unsubscribe' "
        f"WHEN {h}.kind = 'unsubscribe' THEN 'optout' ELSE {h}.kind END"
    )


def anonymous_sql(h: str = "h") -> str:
    """The hit `h` is a page tag without a landing token: an anonymous visit, counted apart."""
    return f"({h}.kind = 'page' AND {h}.sig_status = 'missing')"


def verdict_sql(h: str = "h") -> str:
    """Verdict on the hit `h`. rejected: bad or missing signature (a page tag's forged or
    malformed token; a page tag without a token is an anonymous visit, not rejected); failed: 4xx/5xx (an unknown
    status counts as served); automated: flagged machine/bot activity; accepted: everything
    else, the counted hits."""
    return (
        f"CASE WHEN {h}.sig_status NOT IN ('valid', 'unchecked') AND NOT {anonymous_sql(h)} THEN 'rejected' "
        f"WHEN {h}.status >= 400 THEN 'failed' "
        f"WHEN {automated_sql(h)} THEN 'automated' "
        "ELSE 'accepted' END"
    )


TRAP_CATEGORY = "trap"
ORPHAN_REASONS = ("delivery", "recipient", "link")
# A hit dated outside the plausible window around its delivery's send (a wrong clock, a forged
# or replayed line) is not counted: resolution 'clock'. The window is the database's, in `meta`
# (set from the config key clock_window_days by each ingest; these defaults until then).
CLOCK = "clock"
CLOCK_WINDOW_KEYS = {"clock_before_days": 1, "clock_after_days": 400}


def orphan_sql(h: str) -> str:
    """Whether the hit `h` is an orphan: accepted, but no manifest explains it."""
    reasons = ", ".join(f"'{r}'" for r in ORPHAN_REASONS)
    return f"{h}.resolution IN ({reasons})"


def clock_sql(h: str, d: str) -> str:
    """Whether the hit `h` is dated outside the clock window around the send of its delivery `d`."""
    before, after = (
        f"coalesce((SELECT CAST(m.value AS INTEGER) FROM meta m WHERE m.key = '{key}'), {default})"
        for key, default in CLOCK_WINDOW_KEYS.items()
    )
    # an interval literal times a count: the same text on DuckDB and Spark (to_days is DuckDB's)
    return f"({h}.ts < {d}.sent_at - (INTERVAL 1 DAY) * {before} OR {h}.ts > {d}.sent_at + (INTERVAL 1 DAY) * {after})"


# Event types that prove a person opened the message (the one-click unsubscribe POST does not:
# the mailbox provider sends it, not the reader's browser).
OPENING_TYPES = ("open", "click", "mirror", "optout")
OPENING_SQL = "e.type IN (" + ", ".join(f"'{t}'" for t in OPENING_TYPES) + ")"

# A browser: the userid cookie when logged, else the pair (client IP, user agent). As three
# columns, so that a distinct count of the tuple counts rows whose IP or agent is NULL (Spark
# agrees on tuples) and so that the stored set of browsers can be merged column by column.
BROWSER_COLUMNS = {
    "uid": "e.uid",
    "ip": "CASE WHEN e.uid IS NULL THEN e.ip END",
    "user_agent": "CASE WHEN e.uid IS NULL THEN e.user_agent END",
}
BROWSER_SQL = "(" + ", ".join(BROWSER_COLUMNS.values()) + ")"

# A reader: one recipient of one delivery (recipient_key is unique across deliveries), so the
# readers of several deliveries add up. Every unique count is this one, filtered.
READERS_SQL = "count(DISTINCT e.recipient_key)"


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


# The rates, each of two counts of the same row (a delivery, an email domain).
RATES: dict[str, tuple[str, str]] = {
    "open_rate": ("opens_unique", "delivered"),
    "click_rate": ("clicks_unique", "delivered"),
    "raw_reactivity": ("clicks_unique", "opens_unique"),
}


def rate_sql(name: str, alias: str) -> str:
    """The rate `name` (a key of RATES) over the columns of the row `alias`."""
    num, den = RATES[name]
    return pct_sql(f"{alias}.{num}", f"{alias}.{den}")


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


# Per-delivery counts over `events AS e`. Counts add up across any split of the events; the
# unique ones (READERS_SQL, BROWSER_SQL) do not, which is why derived.py keeps sets for them.
EVENT_COUNTS: dict[str, str] = {
    "opens_total": "count(*) FILTER (WHERE e.type = 'open')",
    "clicks_total": "count(*) FILTER (WHERE e.type = 'click')",
    "mirror_views": "count(*) FILTER (WHERE e.type = 'mirror')",
    "optout_clicks": "count(*) FILTER (WHERE e.type = 'optout')",
}


def weighted_count(count_sql: str, weight: str) -> str:
    """A count of EVENT_COUNTS (`count(*) FILTER (WHERE ...)`) over rows that each stand for
    `weight` events (events counted per group first): the same count, as a BIGINT."""
    if not count_sql.startswith("count(*) FILTER "):
        raise ValueError(f"not a filtered count: {count_sql}")
    return f"CAST(coalesce(sum({weight}){count_sql[len('count(*)') :]}, 0) AS BIGINT)"


# The reader flags behind the unique counts: whether a reader did this at least once.
READER_FLAGS: dict[str, str] = {
    "opened": OPENING_SQL,
    "clicked": "e.type = 'click'",
    "unsubscribed": "e.type = 'unsubscribe'",
}
# Unique counts: readers with a flag, and distinct browsers that clicked.
UNIQUE_OF_FLAG = {"opens_unique": "opened", "clicks_unique": "clicked", "unsubscribes": "unsubscribed"}
EVENT_UNIQUES: dict[str, str] = {
    **{name: f"{READERS_SQL} FILTER (WHERE {READER_FLAGS[flag]})" for name, flag in UNIQUE_OF_FLAG.items()},
    "persons_clicked": f"count(DISTINCT {BROWSER_SQL}) FILTER (WHERE e.type = 'click')",
}
EVENT_AGGREGATES: dict[str, str] = {**EVENT_COUNTS, **EVENT_UNIQUES}

# Per-delivery counts of the hits that are shown but never counted, over `hits_classified AS h`.
EXCLUDED_AGGREGATES: dict[str, str] = {
    "rejected_hits": "count(*) FILTER (WHERE h.verdict = 'rejected')",
    "failed_hits": "count(*) FILTER (WHERE h.verdict = 'failed')",
    "machine_opens": "count(*) FILTER (WHERE h.verdict = 'automated' AND h.type = 'open')",
    "bot_clicks": "count(*) FILTER (WHERE h.verdict = 'automated' AND h.type = 'click')",
}
TOTAL_COLUMNS = (*EVENT_AGGREGATES, *EXCLUDED_AGGREGATES)
# The hits shown under a report but never counted in it ("Not counted"): the excluded hits, the
# orphans, and the hits dated outside their delivery's clock window.
NOT_COUNTED: dict[str, str] = {
    **EXCLUDED_AGGREGATES,
    "orphan_hits": f"count(*) FILTER (WHERE {orphan_sql('h')})",
    "clock_hits": f"count(*) FILTER (WHERE h.resolution = '{CLOCK}')",
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


def delivery_totals_sql(event_where: str = "TRUE", hit_where: str = "TRUE") -> str:
    """Per delivery id (column delivery_id, then TOTAL_COLUMNS): the event aggregates of the
    events `e` in `event_where` and the excluded hits `h` (hits_classified) in `hit_where` that
    name a delivery (a page tag without a token, or a malformed one, names none).
    Bound parameters: those of event_where, then hit_where."""
    ev = ", ".join(f"{sql} AS {name}" for name, sql in EVENT_AGGREGATES.items())
    ex = ", ".join(f"{sql} AS {name}" for name, sql in EXCLUDED_AGGREGATES.items())
    return f"""
SELECT coalesce(ev.delivery_id, ex.delivery_id) AS delivery_id,
    {", ".join(f"coalesce(ev.{n}, 0) AS {n}" for n in EVENT_AGGREGATES)},
    {", ".join(f"coalesce(ex.{n}, 0) AS {n}" for n in EXCLUDED_AGGREGATES)}
FROM (SELECT e.delivery_id, {ev} FROM events e WHERE {event_where} GROUP BY e.delivery_id) ev
FULL JOIN (
    SELECT h.delivery_id, {ex} FROM hits_classified h WHERE {hit_where} AND h.delivery_id IS NOT NULL
    GROUP BY h.delivery_id
) ex
    ON ex.delivery_id = ev.delivery_id
"""


def indicators_sql(totals: str, recipient_where: str = "TRUE", delivery_where: str = "TRUE") -> str:
    """One row per delivery (columns delivery, label, subject, sent_at, then INDICATORS) from
    `totals`, a relation with the columns of delivery_totals_sql(). The where-clauses come from
    code (values are bound parameters, in the order of `totals`' own, then recipient_where,
    delivery_where): `r` is `recipients`, `d` is `deliveries`."""
    counts = ", ".join(f"coalesce(t.{n}, 0) AS {n}" for n in TOTAL_COLUMNS)
    rates = ",\n    ".join(f"{rate_sql(name, 'b')} AS {name}" for name in RATES)
    return f"""
WITH t AS ({totals}), rc AS (
    SELECT r.delivery_id, count(*) AS sent, count(*) FILTER (WHERE r.status = 'sent') AS delivered
    FROM recipients r WHERE {recipient_where} GROUP BY r.delivery_id
), b AS (
    SELECT d.delivery_id, d.label, d.subject, d.sent_at,
        coalesce(rc.sent, 0) AS sent, coalesce(rc.delivered, 0) AS delivered, {counts}
    FROM deliveries d
    LEFT JOIN rc ON rc.delivery_id = d.delivery_id
    LEFT JOIN t ON t.delivery_id = d.delivery_id
    WHERE {delivery_where}
)
SELECT b.delivery_id AS delivery, b.label, b.subject, b.sent_at,
    b.sent, b.delivered, b.opens_total, b.opens_unique, b.clicks_total, b.clicks_unique, b.persons_clicked,
    CASE WHEN b.persons_clicked > b.clicks_unique THEN b.persons_clicked - b.clicks_unique ELSE 0 END
        AS forwards_estimate,
    {rates},
    b.mirror_views, b.optout_clicks, b.unsubscribes, b.rejected_hits, b.failed_hits, b.machine_opens,
    b.bot_clicks
FROM b
"""


def email_domain_sql(email: str) -> str:
    """A recipient's email domain, as the domain breakdown groups them."""
    return f"lower(split_part({email}, '@', 2))"


# The dimensions of an event that reports break down by: parsed from the user agent (joined as
# `u`, the table user_agent_families) for opens and clicks, or the link of a click. The value of
# each as SQL over the event `e`, and the events it applies to.
AGENT_DIMENSIONS = ("browser", "os", "device")
# The link dimensions: the events column of each ("link" is the link id, for hot clicks).
LINK_COLUMNS = {"url": "link_url", "label": "link_label", "category": "link_category", "link": "link_id"}
LINK_DIMENSIONS = ("url", "label", "category")  # what `report urls --by` offers
DIMENSIONS: dict[str, str] = {
    "browser": f"coalesce(u.browser, '{useragent.UNKNOWN}')",
    "os": f"coalesce(u.os, '{useragent.UNKNOWN}')",
    "device": "coalesce(u.device, 'other')",
    **{d: f"e.{column}" for d, column in LINK_COLUMNS.items()},
}
# Opens and clicks: what the agent breakdowns and the statistics over time count.
AGENT_EVENTS_SQL = "e.type IN ('open', 'click')"
LINK_EVENTS_SQL = "e.type = 'click'"


def dimension_events_sql(dimension: str) -> str:
    """Which events a dimension counts: opens and clicks by agent, clicks by link."""
    return AGENT_EVENTS_SQL if dimension in AGENT_DIMENSIONS else LINK_EVENTS_SQL


def dimension_figures_sql(dimension: str, event_where: str = "TRUE") -> str:
    """Per delivery and value of `dimension` (columns delivery_id, dimension, value, opens,
    clicks, readers) over the events `e` in `event_where`: readers who opened or clicked (by
    agent) or clicked (by link) with that value. Grouped per reader first, then counted: faster
    than mixing a distinct count with other aggregates."""
    return f"""
SELECT p.delivery_id, '{dimension}' AS dimension, p.value, CAST(sum(p.opens) AS BIGINT) AS opens,
    CAST(sum(p.clicks) AS BIGINT) AS clicks, count(*) AS readers
FROM (
    SELECT e.delivery_id, {DIMENSIONS[dimension]} AS value, e.recipient_key,
        {EVENT_COUNTS["opens_total"]} AS opens, {EVENT_COUNTS["clicks_total"]} AS clicks
    FROM events e
    LEFT JOIN user_agent_families u ON u.user_agent = e.user_agent
    WHERE {event_where} AND {dimension_events_sql(dimension)}
    GROUP BY e.delivery_id, {DIMENSIONS[dimension]}, e.recipient_key
) p
GROUP BY p.delivery_id, p.value
"""


def domain_recipients_sql(recipient_where: str = "TRUE") -> str:
    """Per delivery and recipient email domain: sent and delivered (columns delivery_id, domain,
    sent, delivered) of the recipients `r` in `recipient_where`."""
    return f"""
SELECT r.delivery_id, {email_domain_sql("r.email")} AS domain, count(*) AS sent,
    count(*) FILTER (WHERE r.status = 'sent') AS delivered
FROM recipients r
WHERE {recipient_where}
GROUP BY r.delivery_id, {email_domain_sql("r.email")}
"""


# Whole minutes from a delivery's send to an event, from the interval's fields: epoch and
# date_diff are not portable, extract(DAY|HOUR|MINUTE FROM interval) is.
ELAPSED_MINUTES_SQL = (
    "(extract(DAY FROM e.ts - e.sent_at) * 1440 + extract(HOUR FROM e.ts - e.sent_at) * 60"
    " + extract(MINUTE FROM e.ts - e.sent_at))"
)


def not_counted_sql(hit_where: str = "TRUE", hits: str = "hits_classified") -> str:
    """Per delivery id as logged (columns delivery_id, NULL for the hits that name none, then
    NOT_COUNTED) over the hits `h` of `hits` (hits_classified's columns) in `hit_where`."""
    counts = ", ".join(f"{sql} AS {name}" for name, sql in NOT_COUNTED.items())
    return f"SELECT h.delivery_id, {counts} FROM {hits} h WHERE {hit_where} GROUP BY h.delivery_id"


def minute_figures_sql(event_where: str = "TRUE", events: str = "events") -> str:
    """Per delivery and whole minute since its send (columns delivery_id, minutes, opens,
    clicks): the opens and clicks (opens_total, clicks_total) among the events `e` of `events`
    in `event_where`. What `report stats` draws over time, and its time to reach a share of them."""
    return f"""
SELECT e.delivery_id, {ELAPSED_MINUTES_SQL} AS minutes,
    {EVENT_COUNTS["opens_total"]} AS opens, {EVENT_COUNTS["clicks_total"]} AS clicks
FROM {events} e
WHERE {event_where} AND {AGENT_EVENTS_SQL}
GROUP BY ALL
"""


def domain_figures_sql(event_where: str = "TRUE") -> str:
    """Per delivery and recipient email domain (columns delivery_id, domain, sent, delivered,
    opens_unique, clicks_unique): the readers among the events `e` in `event_where` (every event
    is of a manifest recipient, so its domain is in domain_recipients_sql)."""
    flags = ", ".join(
        f"max(CASE WHEN {READER_FLAGS[UNIQUE_OF_FLAG[n]]} THEN 1 ELSE 0 END) AS {UNIQUE_OF_FLAG[n]}"
        for n in ("opens_unique", "clicks_unique")
    )
    return f"""
SELECT t.delivery_id, t.domain, t.sent, t.delivered,
    coalesce(a.opens_unique, 0) AS opens_unique, coalesce(a.clicks_unique, 0) AS clicks_unique
FROM ({domain_recipients_sql()}) t
LEFT JOIN (
    SELECT f.delivery_id, f.email_domain, count(*) FILTER (WHERE f.opened = 1) AS opens_unique,
        count(*) FILTER (WHERE f.clicked = 1) AS clicks_unique
    FROM (
        SELECT e.delivery_id, e.email_domain, e.recipient_key, {flags}
        FROM events e
        WHERE {event_where}
        GROUP BY e.delivery_id, e.email_domain, e.recipient_key
    ) f
    GROUP BY f.delivery_id, f.email_domain
) a ON a.delivery_id = t.delivery_id AND a.email_domain IS NOT DISTINCT FROM t.domain
"""


# The columns of a chunk whose recipients were looked up before it is resolved (ingest/lookup.py):
# its recipient's recipient_key and email domain (email_domain_sql), NULL when the manifests have
# no such recipient of its delivery
LOOKED_UP = ("looked_up_key", "looked_up_domain")


def resolve_sql(hits: str, recipient_keys: str | None = "recipient_keys") -> str:
    """The hits of the relation `hits` (the log columns of the `hits` table) with their event
    type and verdict, resolved against the manifests: the reader keys, the recipient's email
    domain, and the `resolution`: the verdict when the hit is not accepted, else 'delivery' (an
    orphan) when no manifest has its delivery, 'clock' when it is dated outside the delivery's
    clock window (clock_sql), else the first id that failed to match ('recipient', 'link': an
    orphan), 'trap' for a click on a trap link, or 'event': a counted tracking event (an
    accepted hit of a manifest recipient of its delivery; a click on a manifest link that is not
    a trap; a page tag whose token names one), 'anonymous' for a page tag without token. Reads `delivery_keys` and
    `recipient_keys` (see recipient_keys_sql), or the relation of the same columns named by
    `recipient_keys` (a subset holding the hits' recipients); with `recipient_keys` None, the
    hits carry what a join with it would give as their LOOKED_UP columns."""
    columns = ", ".join(f"h.{c}" for c in HIT_COLUMNS)
    if recipient_keys is None:
        found, domain = (f"h.{c}" for c in LOOKED_UP)
        key, recipients = f"{found} AS recipient_key", ""
    else:
        key, domain, found = "r.recipient_key", email_domain_sql("r.email"), "r.recipient_id"
        recipients = f"LEFT JOIN {recipient_keys} r ON r.delivery_id = h.delivery_id AND r.recipient_id = h.recipient_id"
    return f"""
SELECT {columns}, h.class, h.reasons, h.type, h.verdict,
    CASE WHEN h.verdict <> 'accepted' THEN h.verdict
         WHEN {anonymous_sql("h")} THEN 'anonymous'
         WHEN d.delivery_id IS NULL THEN 'delivery'
         WHEN {clock_sql("h", "d")} THEN '{CLOCK}'
         WHEN {found} IS NULL THEN 'recipient'
         WHEN h.type = 'click' AND l.link_id IS NULL THEN 'link'
         WHEN h.type = 'click' AND coalesce(l.category, '') = '{TRAP_CATEGORY}' THEN 'trap'
         ELSE 'event' END AS resolution,
    CAST(dk.delivery_key AS INTEGER) AS delivery_key, {key},
    {domain} AS email_domain
FROM (SELECT x.*, {type_sql("x")} AS type, {verdict_sql("x")} AS verdict FROM {hits} x) h
LEFT JOIN deliveries d ON d.delivery_id = h.delivery_id
LEFT JOIN delivery_keys dk ON dk.delivery_id = h.delivery_id
{recipients}
LEFT JOIN links l ON l.delivery_id = h.delivery_id AND l.link_id = h.link_id
"""


def recipient_keys_sql(delivery_keys: str, recipient_where: str = "TRUE") -> str:
    """The recipients `r` in `recipient_where` numbered: recipient_key is the delivery's key
    times 2^32 plus the recipient's rank in the delivery, so it is unique across deliveries."""
    return f"""
SELECT r.delivery_id, r.recipient_id, r.email, r.status,
    CAST(dk.delivery_key AS BIGINT) * 4294967296
        + row_number() OVER (PARTITION BY r.delivery_id ORDER BY r.recipient_id) AS recipient_key
FROM recipients r JOIN {delivery_keys} dk ON dk.delivery_id = r.delivery_id
WHERE {recipient_where}
"""


# -- web tracking: the page tags (routes: /w/{tag}.gif?tl=TOKEN[&amount=&currency=&items=]) --------

VISIT_GAP = "INTERVAL 30 MINUTES"  # a page view after this long without one starts a new visit


def _param_sql(query: str, name: str, value_re: str) -> str:
    """The first `name=` parameter of `query` whose whole value matches `value_re`, else NULL
    (regexp_extract gives '' on no match in DuckDB and Spark alike)."""
    return f"nullif(regexp_extract('&' || {query}, '&{name}=({value_re})(&|$)', 1), '')"


# A transaction's amount: a plain decimal with at most 4 decimals, exact (DECIMAL, never a
# float); the currency: 3 letters, upper-cased (ISO 4217 shape); items: a whole number.
AMOUNT_SQL = f"CAST({_param_sql('c.query', 'amount', '[0-9]{1,14}([.][0-9]{1,4})?')} AS DECIMAL(18,4))"
CURRENCY_SQL = f"upper({_param_sql('c.query', 'currency', '[A-Za-z]{3}')})"
ITEMS_SQL = f"CAST({_param_sql('c.query', 'items', '[0-9]{1,9}')} AS BIGINT)"


def page_events_sql(classified: str = "hits_classified") -> str:
    """Every counted page view (resolution 'event': a valid token of a manifest recipient) and
    every anonymous one (no token), with its tag, transaction figures (amount NULL: not a
    transaction) and whether it starts a visit (no page view of the same visitor, a reader or for
    anonymous views a browser, in the VISIT_GAP before it)."""
    anon = "c.resolution = 'anonymous'"
    # a reader, or for an anonymous view its browser (as BROWSER_COLUMNS)
    visitor = (
        f"c.resolution, c.delivery_id, c.recipient_id, CASE WHEN {anon} THEN c.uid END, "
        f"CASE WHEN {anon} AND c.uid IS NULL THEN c.ip END, "
        f"CASE WHEN {anon} AND c.uid IS NULL THEN c.user_agent END"
    )
    return f"""
SELECT c.ts, c.delivery_id, c.recipient_id, c.delivery_key, c.recipient_key, c.link_id AS tag,
    {anon} AS anonymous, {AMOUNT_SQL} AS amount, {CURRENCY_SQL} AS currency, {ITEMS_SQL} AS items,
    c.ip, c.user_agent, c.uid,
    coalesce(lag(c.ts) OVER (PARTITION BY {visitor} ORDER BY c.ts) < c.ts - {VISIT_GAP}, TRUE) AS visit_start
FROM {classified} c
WHERE c.type = 'page' AND c.resolution IN ('event', 'anonymous')
"""


# Per delivery over `page_events AS p` (attributed views only; anonymous ones are counted apart,
# with the same definitions over `p.anonymous`).
WEB_COUNTS: dict[str, str] = {
    "page_views": "count(*)",
    "visits": "count(*) FILTER (WHERE p.visit_start)",
    "visitors": "count(DISTINCT p.recipient_key)",
    "transactions": "count(*) FILTER (WHERE p.amount IS NOT NULL)",
    "items": "CAST(coalesce(sum(p.items) FILTER (WHERE p.amount IS NOT NULL), 0) AS BIGINT)",
}
WEB_INDICATORS = ("page_views", "visits", "visitors", "pages_per_visitor", "transactions", "items")


def web_indicators_sql(where: str = "TRUE") -> str:
    """Per delivery (delivery_id, then WEB_INDICATORS) over the page views `p` in `where`, not
    anonymous. Anonymous views: anonymous_web_sql. Revenue: revenue_sql (one row per currency)."""
    counts = ", ".join(f"{sql} AS {name}" for name, sql in WEB_COUNTS.items())
    return f"""
SELECT w.delivery_id, w.page_views, w.visits, w.visitors,
    {tenths_sql("w.page_views", "w.visitors")} AS pages_per_visitor, w.transactions, w.items
FROM (SELECT p.delivery_id, {counts} FROM page_events p WHERE NOT p.anonymous AND {where} GROUP BY p.delivery_id) w
"""


def anonymous_web_sql(where: str = "TRUE") -> str:
    """The anonymous page views (no token) in `where`: page_views, visits, transactions (one row)."""
    return f"""
SELECT {WEB_COUNTS["page_views"]} AS page_views, {WEB_COUNTS["visits"]} AS visits,
    {WEB_COUNTS["transactions"]} AS transactions
FROM page_events p WHERE p.anonymous AND {where}
"""


def revenue_sql(delivered: str, where: str = "TRUE") -> str:
    """Per delivery and currency (NULL: the tag named none): transactions, items, revenue (exact
    DECIMAL sum of the amounts) and revenue_per_delivered (revenue / delivered messages, half up
    to 4 decimals, computed on whole ten-thousandths), over the attributed page views `p` in
    `where`; `delivered` is a relation (delivery_id, delivered)."""
    units = "CAST(x.revenue * 10000 AS BIGINT)"
    per = f"floor((2 * {units} + x.delivered) / (2 * x.delivered))"
    return f"""
SELECT x.delivery_id, x.currency, x.transactions, x.items, x.revenue,
    CASE WHEN x.delivered = 0 THEN NULL
         ELSE CAST(CAST(CAST({per} AS BIGINT) AS DECIMAL(18,4)) * CAST(0.0001 AS DECIMAL(5,4)) AS DECIMAL(18,4))
    END AS revenue_per_delivered
FROM (
    SELECT p.delivery_id, p.currency, count(*) AS transactions, CAST(coalesce(sum(p.items), 0) AS BIGINT) AS items,
        CAST(sum(p.amount) AS DECIMAL(18,4)) AS revenue, coalesce(max(dl.delivered), 0) AS delivered
    FROM page_events p LEFT JOIN ({delivered}) dl ON dl.delivery_id = p.delivery_id
    WHERE NOT p.anonymous AND p.amount IS NOT NULL AND {where}
    GROUP BY p.delivery_id, p.currency
) x
"""


# The conversion funnel: each reader's deepest step; a step counts the readers who reached it or
# a later one (a visitor came through a click, so counts as clicked and opened, even when that
# click was not counted itself), so the steps never grow.
FUNNEL_STEPS = ("delivered", "opened", "clicked", "visited", "converted")


def funnel_sql(event_where: str = "TRUE", page_where: str = "TRUE") -> str:
    """Per delivery: delivered, opened, clicked, visited, converted (readers, see FUNNEL_STEPS)
    over the events `e` in `event_where` and the page views `p` in `page_where` (bound
    parameters in that order). delivered: recipients sent (not failed)."""
    return f"""
SELECT rc.delivery_id, rc.delivered,
    count(*) FILTER (WHERE s.depth >= 1) AS opened,
    count(*) FILTER (WHERE s.depth >= 2) AS clicked,
    count(*) FILTER (WHERE s.depth >= 3) AS visited,
    count(*) FILTER (WHERE s.depth >= 4) AS converted
FROM (SELECT r.delivery_id, count(*) FILTER (WHERE r.status = 'sent') AS delivered FROM recipients r GROUP BY r.delivery_id) rc
LEFT JOIN (
    SELECT u.delivery_id, u.recipient_key, max(u.depth) AS depth
    FROM (
        SELECT e.delivery_id, e.recipient_key,
            CASE WHEN e.type = 'click' THEN 2 WHEN {OPENING_SQL} THEN 1 ELSE 0 END AS depth
        FROM events e WHERE e.type <> 'page' AND {event_where}
        UNION ALL
        SELECT p.delivery_id, p.recipient_key, CASE WHEN p.amount IS NOT NULL THEN 4 ELSE 3 END AS depth
        FROM page_events p WHERE NOT p.anonymous AND {page_where}
    ) u
    GROUP BY u.delivery_id, u.recipient_key
) s ON s.delivery_id = rc.delivery_id
GROUP BY rc.delivery_id, rc.delivered
"""


CLASSIFIED_HITS = f"SELECT h.*, {type_sql()} AS type, {verdict_sql()} AS verdict FROM hits h"


def views(classified: str = "hits_classified") -> dict[str, str]:
    """The view definitions over `classified`: resolved hits with their type and verdict (the
    `hits_classified` view, or the hits of a commit being merged)."""
    labels = """
    d.delivery_id IS NOT NULL AS delivery_known, d.label AS delivery_label, d.sent_at,
    l.link_id IS NOT NULL AS link_known, l.label AS link_label, l.url AS link_url,
    l.category AS link_category, l.position AS link_position"""
    joins = f"""
FROM {classified} c
LEFT JOIN deliveries d ON d.delivery_id = c.delivery_id
LEFT JOIN links l ON l.delivery_id = c.delivery_id AND l.link_id = c.link_id"""
    return {
        # Every stored hit with its event type and verdict (and its resolution, see resolve_sql).
        "hits_classified": CLASSIFIED_HITS,
        # Accepted hits with what the manifests say about them (NULLs where nothing matches:
        # resolved against the manifests as they are now, so a manifest stored after the logs
        # resolves them).
        "accepted_hits": f"""
SELECT c.ts, c.type, c.delivery_id, c.recipient_id, c.link_id, c.ip, c.user_agent, c.uid,
    c.resolution NOT IN ('delivery', 'recipient') AS recipient_known, {labels}{joins}
WHERE c.verdict = 'accepted'
""",
        # The counted tracking events.
        "events": f"""
SELECT c.ts, c.type, c.delivery_id, d.label AS delivery_label, d.sent_at, c.recipient_id,
    c.link_id, l.label AS link_label, l.url AS link_url, l.category AS link_category,
    l.position AS link_position, c.ip, c.user_agent, c.uid, c.delivery_key, c.recipient_key,
    c.email_domain{joins}
WHERE c.resolution = 'event'
""",
        # Accepted hits that no manifest explains, with the first id that failed to match.
        "orphans": f"""
SELECT c.ts, c.type, c.delivery_id, c.recipient_id, c.link_id, c.ip, c.user_agent, c.uid,
    c.resolution NOT IN ('delivery', 'recipient') AS recipient_known, {labels},
    c.resolution AS orphan_reason{joins}
WHERE {orphan_sql("c")}
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
        # Page views of the site (web tracking), attributed or anonymous.
        "page_events": page_events_sql(classified),
        # The Tracking indicators of every delivery, of all time (from the merged totals).
        "delivery_indicators": indicators_sql("SELECT * FROM delivery_totals"),
    }
