"""Report timings on a generated database of 10 million hits (python bench/bench_reports.py).

Builds the database directly in DuckDB (range() into hits, deliveries, links, recipients: no
log parsing), then times every report on a read-only connection, as the CLI runs them, and
prints a table. Options: --hits N, --db PATH (kept and reused if it exists), --runs N,
--at-query-time (ignore the stored hit_facts and resolve hits against the manifests in every
query, as before refresh_derived existed: the "before" figures).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from tracklog import metrics
from tracklog.reports import common, delivery, hot_clicks, recipient, stats, streams, urls
from tracklog.schema import HIT_COLUMNS
from tracklog.store import open_writer

DELIVERIES = 10
RECIPIENTS_PER_DELIVERY = 200_000
LINKS_PER_DELIVERY = 12  # the last one a trap
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.0",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
]


def build(db: Path, hits: int) -> None:
    ids = "'D' || lpad(CAST(d AS VARCHAR), 2, '0')"
    with open_writer(db) as con:
        con.execute(f"""
INSERT INTO deliveries
SELECT {ids}, 'Delivery ' || d, TIMESTAMP '2026-01-05 09:00:00' + INTERVAL (7 * d) DAY, 'Subject ' || d,
    NULL, NULL, 'bench.json', repeat('0', 64), now()::TIMESTAMP
FROM range({DELIVERIES}) t(d)""")
        con.execute(f"""
INSERT INTO links
SELECT {ids}, 'l' || k, k + 1, 'https://shop.example.com/p/' || (k + d) % 20, 'Link ' || k,
    CASE WHEN k = {LINKS_PER_DELIVERY - 1} THEN 'trap' WHEN k % 3 = 0 THEN 'content' ELSE 'promo' END
FROM range({DELIVERIES}) a(d), range({LINKS_PER_DELIVERY}) b(k)""")
        con.execute(f"""
INSERT INTO recipients
SELECT {ids}, 'r' || lpad(CAST(r AS VARCHAR), 7, '0'),
    'user' || r || '@' || ['gmail.com', 'yahoo.fr', 'orange.fr', 'outlook.com', 'example.org'][1 + r % 5],
    CASE WHEN hash(d, r) % 50 = 0 THEN 'failed' ELSE 'sent' END, NULL
FROM range({DELIVERIES}) a(d), range({RECIPIENTS_PER_DELIVERY}) b(r)""")
        con.execute(
            "INSERT INTO sources VALUES (1, 'bench', 0, 'bench', false, 0, 0, 0, 0, 0, 'combined', now()::TIMESTAMP, now()::TIMESTAMP)"
        )
        agents = ", ".join("'" + ua.replace("'", "''") + "'" for ua in USER_AGENTS)
        con.execute(f"""
INSERT INTO hits ({", ".join(HIT_COLUMNS)})
SELECT 1, i + 1, i * 200,
    TIMESTAMP '2026-01-05 09:00:00' + INTERVAL (7 * d) DAY
        + INTERVAL (CAST(pow(hash(i, 3) % 1000 / 1000.0, 3) * 259200 AS BIGINT)) SECOND,
    '198.51.' || (r % 250) || '.' || (r % 200), CASE WHEN kind = 'unsubscribe' AND hash(i, 4) % 2 = 0 THEN 'POST' ELSE 'GET' END,
    's=x',
    CASE WHEN hash(i, 5) % 100 = 0 THEN 404 ELSE 200 END, 43, NULL,
    [{agents}][1 + CAST((r + hash(i, 6) % 2) % {len(USER_AGENTS)} AS INTEGER)],
    CASE WHEN r % 2 = 0 THEN 'uid' || r END, NULL, kind, {ids},
    CASE WHEN kind = 'click' THEN 'l' || least(CAST(pow(hash(i, 7) % 1000 / 1000.0, 2) * {LINKS_PER_DELIVERY} AS BIGINT), {LINKS_PER_DELIVERY - 1}) END,
    'r' || lpad(CAST(r AS VARCHAR), 7, '0'),
    CASE WHEN hash(i, 8) % 100 = 0 THEN 'invalid' ELSE 'valid' END
FROM (
    SELECT i, i % {DELIVERIES} AS d,
        -- recipients beyond the manifest make ~1% orphans
        hash(i, 1) % {RECIPIENTS_PER_DELIVERY * 101 // 100} AS r,
        CASE WHEN hash(i, 2) % 100 < 60 THEN 'open' WHEN hash(i, 2) % 100 < 95 THEN 'click'
             WHEN hash(i, 2) % 100 < 98 THEN 'mirror' ELSE 'unsubscribe' END AS kind
    FROM range({hits}) t(i)
)
ORDER BY 4  -- by time, as a log appends them (refresh_derived keeps that order in hit_facts)""")
        con.execute("CHECKPOINT")


def timed(func: Callable[[], pa.Table], runs: int) -> tuple[float, float, int]:
    """(first run, median of the runs) in seconds, and the row count."""
    times = []
    rows = 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = func().num_rows
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=10_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/tracklog-bench-reports.duckdb"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--at-query-time", action="store_true", help="ignore the stored hit_facts")
    args = parser.parse_args()
    err = Console(stderr=True)
    if not args.db.exists():
        start = time.perf_counter()
        build(args.db, args.hits)
        err.print(f"built {args.db} with {args.hits:,} hits in {time.perf_counter() - start:.1f}s")
    with open_writer(args.db) as wcon:
        if not metrics.derived_is_current(wcon):
            start = time.perf_counter()
            metrics.refresh_derived(wcon)
            err.print(
                f"refresh_derived (hit_facts, delivery_totals, breakdowns) in {time.perf_counter() - start:.1f}s"
            )
    if args.at_query_time:
        metrics.derived_is_current = lambda con: False
    con = duckdb.connect(str(args.db), read_only=True)
    n = con.execute("SELECT count(*) FROM hits").fetchall()[0][0]
    d = "D03"
    reports: dict[str, Callable[[], pa.Table]] = {
        "report delivery": lambda: delivery.delivery_indicators(con, d),
        "report deliveries": lambda: delivery.deliveries(con),
        "report hot-clicks": lambda: hot_clicks.hot_clicks(con, d),
        "report urls": lambda: urls.urls(con),
        "report urls --by category": lambda: urls.urls(con, "category"),
        "report streams (sequences)": lambda: streams.sequences(con, d),
        "report streams (transitions)": lambda: streams.transitions(con, d),
        "report stats --bucket 1h": lambda: stats.timeline(con, "1h"),
        "report stats (reach)": lambda: stats.reach(con),
        "report stats --by browser": lambda: stats.breakdown(con, "browser"),
        "report stats --by device": lambda: stats.breakdown(con, "device"),
        "report stats --by domain": lambda: stats.breakdown(con, "domain"),
        "recipient ID": lambda: recipient.recipient_events(con, "r0000042"),
        "table footer (excluded hits, one delivery)": lambda: pa.table(
            {"n": [sum(common.excluded_hits(con, d, common.ALL_TIME).values())]}
        ),
    }
    table = Table(
        title=f"Reports on {n:,} hits ({DELIVERIES} deliveries x {RECIPIENTS_PER_DELIVERY:,} recipients)"
    )
    for col in ("report", "first (s)", f"median of {args.runs} (s)", "rows"):
        table.add_column(col, justify="left" if col == "report" else "right")
    for name, func in reports.items():
        first, median, rows = timed(func, args.runs)
        table.add_row(name, f"{first:.3f}", f"{median:.3f}", str(rows))
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
