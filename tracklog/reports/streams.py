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
    lead(e.link_id) OVER (PARTITION BY e.recipient_id ORDER BY e.ts, e.link_id) AS next_link
FROM events e
WHERE e.type = 'click' AND e.delivery_id = ? AND e.ts >= ? AND e.ts < ?
"""


def _sequences_sql(clicks: str) -> str:
    """sequence, recipients, share over the clicks relation `clicks` (_CLICKS's columns)."""
    steps = ", ".join(f"max(CASE WHEN c.step = {i} THEN c.link_id END)" for i in range(1, MAX_STEPS + 1))
    inner = f"""
SELECT p.sequence, count(*) AS recipients
FROM (
    SELECT c.recipient_id,
        concat_ws('{SEPARATOR}', {steps}, CASE WHEN max(c.step) > {MAX_STEPS} THEN '…' END) AS sequence
    FROM {clicks} c
    GROUP BY c.recipient_id
    HAVING max(c.step) > 1
) p
GROUP BY p.sequence
"""
    return metrics.with_shares_sql(inner, ["sequence", "recipients"], "recipients", "sequence")


_SEQUENCE_ORDER = "recipients DESC, sequence"
_TRANSITION_ORDER = "count DESC, from_link, to_link"


def _transitions_sql(clicks: str) -> str:
    """from_link, from_label, to_link, to_label, count over the clicks relation `clicks`; one
    bound parameter, the delivery id (for the labels of the links clicked next)."""
    return f"""
SELECT c.link_id AS from_link, c.link_label AS from_label, c.next_link AS to_link,
    l.label AS to_label, count(*) AS count
FROM {clicks} c
LEFT JOIN links l ON l.delivery_id = ? AND l.link_id = c.next_link
WHERE c.next_link IS NOT NULL
GROUP BY c.link_id, c.link_label, c.next_link, l.label
"""


def sequences(
    con: Connection, delivery_id: str, window: Window = ALL_TIME, limit: int | None = None
) -> Result:
    """Columns sequence (link ids joined by ' > '), recipients, share; most common first."""
    require_delivery(con, delivery_id)
    sql = _sequences_sql(f"({_CLICKS})") + f" ORDER BY {_SEQUENCE_ORDER}"
    return query(con, sql + limit_clause(limit), [delivery_id, *window.params()])


def transitions(
    con: Connection, delivery_id: str, window: Window = ALL_TIME, limit: int | None = None
) -> Result:
    """Columns from_link, from_label, to_link, to_label, count; most frequent first."""
    require_delivery(con, delivery_id)
    sql = _transitions_sql(f"({_CLICKS})") + f" ORDER BY {_TRANSITION_ORDER}"
    return query(con, sql + limit_clause(limit), [delivery_id, *window.params(), delivery_id])


_SEQUENCE_COLUMNS = (("sequence", "string"), ("recipients", "integer"), ("share", "float"))
_TRANSITION_COLUMNS = (
    ("from_link", "string"),
    ("from_label", "string"),
    ("to_link", "string"),
    ("to_label", "string"),
    ("count", "integer"),
)


def sequences_and_transitions(
    con: Connection, delivery_id: str, window: Window = ALL_TIME, limit: int | None = None
) -> tuple[Result, Result]:
    """sequences() and transitions() from one read of the delivery's clicks (its windows
    computed once): `report streams` shows both."""
    require_delivery(con, delivery_id)
    limit_clause(limit)  # checks it
    keep = "" if limit is None else f" WHERE x._n <= {int(limit)}"
    seq = ", ".join(f"x.{name}" for name, _ in _SEQUENCE_COLUMNS)
    tr = ", ".join(f"x.{name}" for name, _ in _TRANSITION_COLUMNS)
    no_seq = ", ".join(f"CAST(NULL AS {_SQL_TYPES[kind]}) AS {name}" for name, kind in _SEQUENCE_COLUMNS)
    no_tr = ", ".join(f"CAST(NULL AS {_SQL_TYPES[kind]}) AS {name}" for name, kind in _TRANSITION_COLUMNS)
    sql = f"""
WITH c AS ({_CLICKS})
SELECT 1 AS _part, x._n, {seq}, {no_tr}
FROM (SELECT s.*, row_number() OVER (ORDER BY {_SEQUENCE_ORDER}) AS _n FROM ({_sequences_sql("c")}) s) x{keep}
UNION ALL
SELECT 2 AS _part, x._n, {no_seq}, {tr}
FROM (SELECT t.*, row_number() OVER (ORDER BY {_TRANSITION_ORDER}) AS _n FROM ({_transitions_sql("c")}) t) x{keep}
ORDER BY _part, _n
"""
    both = query(con, sql, [delivery_id, *window.params(), delivery_id])
    sequences_part = both.part([name for name, _ in _SEQUENCE_COLUMNS], 1)
    return sequences_part, both.part([name for name, _ in _TRANSITION_COLUMNS], 2)


_SQL_TYPES = {"string": "STRING", "integer": "BIGINT", "float": "DOUBLE"}
