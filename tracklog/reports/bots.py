"""`tracklog report bots`: the machines' hits per delivery, by class and reason, and the agents
and networks (/24, /48) behind them (README "Machine opens and bot clicks")."""

from __future__ import annotations

from tracklog.classify import REASONS
from tracklog.engines import Connection
from tracklog.reports.common import ALL_TIME, Window, query, require_delivery
from tracklog.result import Result

TOP = 10  # agents and networks per delivery when no --limit is given


def _scope(delivery_id: str | None, window: Window) -> tuple[str, list[object]]:
    """The accepted hits (people's and machines') of the window, of one delivery or all."""
    where = "h.verdict IN ('accepted', 'automated') AND h.ts >= ? AND h.ts < ?"
    params: list[object] = list(window.params())
    if delivery_id is not None:
        where += " AND h.delivery_id = ?"
        params.append(delivery_id)
    return where, params


def classes(con: Connection, delivery_id: str | None = None, window: Window = ALL_TIME) -> Result:
    """Per delivery and class: hits, opens, clicks, other (mirror, opt-out, one-click) and, for
    the machines' classes, how many hits each reason flagged (a hit may have several)."""
    if delivery_id is not None:
        require_delivery(con, delivery_id)
    where, params = _scope(delivery_id, window)
    reasons = ", ".join(
        f"count(*) FILTER (WHERE instr(concat(',', h.reasons, ','), ',{r},') > 0) AS {r}" for r in REASONS
    )
    sql = f"""
SELECT h.delivery_id AS delivery, coalesce(h.class, 'human') AS class, count(*) AS hits,
    count(*) FILTER (WHERE h.type = 'open') AS opens, count(*) FILTER (WHERE h.type = 'click') AS clicks,
    count(*) FILTER (WHERE h.type NOT IN ('open', 'click')) AS other, {reasons}
FROM hits_classified h
WHERE {where}
GROUP BY h.delivery_id, coalesce(h.class, 'human')
ORDER BY delivery, class
"""
    return query(con, sql, params)


def _top(
    con: Connection,
    value: str,
    name: str,
    delivery_id: str | None,
    window: Window,
    limit: int | None,
) -> Result:
    where, params = _scope(delivery_id, window)
    top = TOP if limit is None else int(limit)
    sql = f"""
SELECT t.delivery, t.{name}, t.hits, t.machine_opens, t.bot_clicks
FROM (
    SELECT h.delivery_id AS delivery, {value} AS {name}, count(*) AS hits,
        count(*) FILTER (WHERE h.class = 'machine_open') AS machine_opens,
        count(*) FILTER (WHERE h.class = 'bot_click') AS bot_clicks
    FROM hits_classified h
    WHERE {where} AND h.verdict = 'automated'
    GROUP BY h.delivery_id, {value}
) t
QUALIFY row_number() OVER (PARTITION BY t.delivery ORDER BY t.hits DESC, t.{name}) <= {top}
ORDER BY t.delivery, t.hits DESC, t.{name}
"""
    return query(con, sql, params)


def agents(
    con: Connection,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> Result:
    """Per delivery, the user agents behind the most machine hits."""
    return _top(con, "h.user_agent", "user_agent", delivery_id, window, limit)


def network_sql(ip: str) -> str:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (its first three groups, zeros where
    '::' compresses them), as text."""
    head = f"CASE WHEN instr({ip}, '::') > 0 THEN substr({ip}, 1, instr({ip}, '::') - 1) ELSE {ip} END"
    groups = ", ':', ".join(f"coalesce(nullif(split_part({head}, ':', {i}), ''), '0')" for i in (1, 2, 3))
    return (
        f"CASE WHEN {ip} IS NULL THEN NULL "
        f"WHEN instr({ip}, ':') > 0 THEN concat({groups}, '::/48') "
        f"ELSE concat(split_part({ip}, '.', 1), '.', split_part({ip}, '.', 2), '.', "
        f"split_part({ip}, '.', 3), '.0/24') END"
    )


def networks(
    con: Connection,
    delivery_id: str | None = None,
    window: Window = ALL_TIME,
    limit: int | None = None,
) -> Result:
    """Per delivery, the networks (/24, /48) behind the most machine hits."""
    return _top(con, network_sql("h.ip"), "network", delivery_id, window, limit)
