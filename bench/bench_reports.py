"""Report timings on a generated database of 10 million hits (python bench/bench_reports.py).

Builds the database directly in DuckDB (range() into hits, deliveries, links, recipients: no
log parsing; see _datasets.py), then times every report on a read-only connection, as the CLI
runs them, and prints a table. Options: --hits N, --db PATH (kept and reused if it exists), --runs N,
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
