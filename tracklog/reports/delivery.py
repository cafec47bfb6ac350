"""Tracking indicators: every figure of metrics.INDICATORS for one delivery, or one row per delivery."""

from __future__ import annotations

import pyarrow as pa

from tracklog import derived, metrics
from tracklog.engines import Connection
from tracklog.reports.common import ALL_TIME, Window, limit_clause, query, require_delivery

# The columns of `report deliveries`: the main figures, so a row fits a terminal.
LIST_COLUMNS = (
    "delivery",
    "label",
    "sent_at",
    "sent",
    "delivered",
    "opens_unique",
    "clicks_unique",
    "open_rate",
    "click_rate",
    "raw_reactivity",
    "unsubscribes",
)


def delivery_indicators(con: Connection, delivery_id: str, window: Window = ALL_TIME) -> pa.Table:
    """One row: delivery, label, subject, sent_at, then the indicators; events within `window`."""
    require_delivery(con, delivery_id)
    totals, params = derived.totals(window.bounds())
    sql = metrics.indicators_sql(
        totals, recipient_where="r.delivery_id = ?", delivery_where="d.delivery_id = ?"
    )
    return query(con, sql, [*params, delivery_id, delivery_id])


def deliveries(con: Connection, window: Window = ALL_TIME, limit: int | None = None) -> pa.Table:
    """One row per delivery sent within `window` (by sent_at), newest first; all-time figures."""
    totals, params = derived.totals()
    indicators = metrics.indicators_sql(totals, delivery_where="d.sent_at >= ? AND d.sent_at < ?")
    sql = (
        f"SELECT {', '.join(LIST_COLUMNS)} FROM ({indicators}) i"
        f" ORDER BY sent_at DESC, delivery{limit_clause(limit)}"
    )
    return query(con, sql, [*params, *window.params()])
