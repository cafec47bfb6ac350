"""Report timings on a generated database of 10 million hits (python bench/bench_reports.py).

Builds the database directly in DuckDB (range() into hits, deliveries, links, recipients: no
log parsing; see _datasets.py), then times every report on a read-only connection, as the CLI
runs them, and prints a table. Options: --hits N, --db PATH (kept and reused if it exists), --runs N,
--window (every report with a --since that holds every hit: the definitions over the events, as
a report with a time window computes them, instead of the figures merged at ingest).
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

from tracklog import derived
from tracklog.reports import common, delivery, hot_clicks, recipient, stats, streams, urls
from tracklog.store import open_writer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _datasets import DELIVERIES, RECIPIENTS_PER_DELIVERY, build


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
    parser.add_argument("--window", action="store_true", help="a time window holding every hit")
    args = parser.parse_args()
    err = Console(stderr=True)
    if not args.db.exists():
        start = time.perf_counter()
        build(args.db, args.hits)
        err.print(f"built {args.db} with {args.hits:,} hits in {time.perf_counter() - start:.1f}s")
    with open_writer(args.db) as wcon:
        if not derived.is_current(wcon):
            start = time.perf_counter()
            derived.sync(wcon)
            err.print(f"derived tables built from the stored hits in {time.perf_counter() - start:.1f}s")
    w = (
        common.Window(since=common.parse_time("1970-01-02", common.parse_tz(None)))
        if args.window
        else common.ALL_TIME
    )
    con = duckdb.connect(str(args.db), read_only=True)
    n = con.execute("SELECT count(*) FROM hits").fetchall()[0][0]
    d = "D03"
    reports: dict[str, Callable[[], pa.Table]] = {
        "report delivery": lambda: delivery.delivery_indicators(con, d, w),
        "report deliveries": lambda: delivery.deliveries(con),
        "report hot-clicks": lambda: hot_clicks.hot_clicks(con, d, w),
        "report urls": lambda: urls.urls(con, window=w),
        "report urls --by category": lambda: urls.urls(con, "category", window=w),
        "report streams (sequences)": lambda: streams.sequences(con, d, w),
        "report streams (transitions)": lambda: streams.transitions(con, d, w),
        "report stats --bucket 1h": lambda: stats.timeline(con, "1h", window=w),
        "report stats (reach)": lambda: stats.reach(con, window=w),
        "report stats --by browser": lambda: stats.breakdown(con, "browser", window=w),
        "report stats --by device": lambda: stats.breakdown(con, "device", window=w),
        "report stats --by domain": lambda: stats.breakdown(con, "domain", window=w),
        "recipient ID": lambda: recipient.recipient_events(con, "r0000042", window=w),
        "table footer (excluded hits, one delivery)": lambda: pa.table(
            {"n": [sum(common.excluded_hits(con, d, w).values())]}
        ),
    }
    how = "a window holding every hit (the definitions)" if args.window else "all time (merged figures)"
    table = Table(
        title=f"Reports, {how}, on {n:,} hits ({DELIVERIES} deliveries x {RECIPIENTS_PER_DELIVERY:,} recipients)"
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
