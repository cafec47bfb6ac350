"""Tracking indicators: every figure of metrics.INDICATORS for one delivery, or one row per delivery."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from tracklog import derived, metrics
from tracklog.engines import Connection
from tracklog.reports.common import ALL_TIME, Window, limit_clause, query, require_delivery
from tracklog.result import Result

# The columns of `report deliveries`: the main figures, so a row fits a terminal, and the
# machines' hits beside the people's figures.
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
    "machine_opens",
    "bot_clicks",
)


def delivery_indicators(con: Connection, delivery_id: str, window: Window = ALL_TIME) -> Result:
    """One row: delivery, label, subject, sent_at, then the indicators; events within `window`."""
    require_delivery(con, delivery_id)
    totals, params = derived.totals(window.bounds())
    sql = metrics.indicators_sql(
        totals, recipient_where="r.delivery_id = ?", delivery_where="d.delivery_id = ?"
    )
    return query(con, sql, [*params, delivery_id, delivery_id])


def deliveries(con: Connection, window: Window = ALL_TIME, limit: int | None = None) -> Result:
    """One row per delivery sent within `window` (by sent_at), newest first; all-time figures."""
    totals, params = derived.totals()
    indicators = metrics.indicators_sql(totals, delivery_where="d.sent_at >= ? AND d.sent_at < ?")
    sql = (
        f"SELECT {', '.join(LIST_COLUMNS)} FROM ({indicators}) i"
        f" ORDER BY sent_at DESC, delivery{limit_clause(limit)}"
    )
    return query(con, sql, [*params, *window.params()])


FUNNEL = (  # stage, indicator, the automated hits not counted beside it
    ("sent", "sent", None),
    ("delivered", "delivered", None),
    ("opened", "opens_unique", "machine_opens"),
    ("clicked", "clicks_unique", "bot_clicks"),
)


def funnel(indicators: Result) -> Result:
    """Columns stage, count, of_sent (%), not_counted: sent -> delivered -> opened -> clicked
    from one delivery's indicators row, with the machine opens and bot clicks beside the stage
    they were kept out of."""
    row = indicators.to_pylist()[0]
    sent = int(row["sent"] or 0)
    counts = [int(row[name] or 0) for _, name, _ in FUNNEL]
    return Result.from_columns(
        [
            ("stage", "string", [stage for stage, _, _ in FUNNEL]),
            ("count", "integer", counts),
            ("of_sent", "float", [_percent(n, sent) for n in counts]),
            ("not_counted", "integer", [row[a] if a else None for _, _, a in FUNNEL]),
        ]
    )


def _percent(num: int, den: int) -> float:
    """num/den in percent, one decimal rounded half up, as metrics.rate_sql rounds the rates (a
    picture of the indicators' counts for the funnel, not an indicator of its own)."""
    if den == 0:
        return 0.0
    return float((Decimal(100 * num) / Decimal(den)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
