"""Tracking indicators: every figure of metrics.INDICATORS for one delivery, or one row per delivery."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from tracklog import metrics
from tracklog.reports.common import ALL_TIME, Window, limit_clause, prepare, query, require_delivery

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


def delivery_indicators(
    con: duckdb.DuckDBPyConnection, delivery_id: str, window: Window = ALL_TIME
) -> pa.Table:
    """One row: delivery, label, subject, sent_at, then the indicators; events within `window`."""
    prepare(con)
    require_delivery(con, delivery_id)
    if window == ALL_TIME:
        sql = metrics.indicators_sql(
            recipient_where="r.delivery_id = ?", delivery_where="d.delivery_id = ?", all_time=True
        )
        return query(con, sql, [delivery_id, delivery_id])
    sql = metrics.indicators_sql(
        event_where="e.delivery_id = ? AND e.ts >= ? AND e.ts < ?",
        hit_where="h.delivery_id = ? AND h.ts >= ? AND h.ts < ?",
        recipient_where="r.delivery_id = ?",
        delivery_where="d.delivery_id = ?",
    )
    params = [delivery_id, *window.params(), delivery_id, *window.params(), delivery_id, delivery_id]
    return query(con, sql, params)


def deliveries(
    con: duckdb.DuckDBPyConnection, window: Window = ALL_TIME, limit: int | None = None
) -> pa.Table:
    """One row per delivery sent within `window` (by sent_at), newest first."""
    prepare(con)
    sql = (
        f"SELECT {', '.join(LIST_COLUMNS)} FROM ({metrics.indicators_sql(delivery_where='d.sent_at >= ? AND d.sent_at < ?', all_time=True)}) i"
        f" ORDER BY sent_at DESC, delivery{limit_clause(limit)}"
    )
    return query(con, sql, window.params())
