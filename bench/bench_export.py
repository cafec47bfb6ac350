"""Export of one day from a large database: does it read only that day's hits?

Usage: python bench/bench_export.py DB DAY [--repeat N]
Prints, per kind, the row groups of `hits` each query scans (EXPLAIN ANALYZE) and the wall time
of `tracklog export --date DAY` per format (median of N whole processes). Run it on a copy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb

from tracklog.export import KINDS, day_window, kind_query


def scanned_row_groups(db: str, day: dt.date) -> dict[str, list[str]]:
    con = duckdb.connect(db, read_only=True)
    since, until = day_window(day)
    out = {}
    for kind in KINDS:
        sql, params = kind_query(kind, since, until)
        plan = con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()[0][1]
        scans = re.findall(r"Table: \S*\.main\.hits.*?Row Groups Scanned: (\d+ / \d+)", plan, re.DOTALL)
        out[kind] = scans
    con.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("day", type=dt.date.fromisoformat)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for kind, scans in scanned_row_groups(args.db, args.day).items():
        print(f"{kind}: row groups of hits scanned: {', '.join(scans)}")
    for fmt in ("csv", "parquet"):
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                started = time.monotonic()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "tracklog",
                        "--db",
                        args.db,
                        "export",
                        "--out",
                        out,
                        "--date",
                        args.day.isoformat(),
                        "--format",
                        fmt,
                    ],
                    check=True,
                )
                times.append(time.monotonic() - started)
        print(f"export --format {fmt}: {statistics.median(times):.2f} s (median of {args.repeat})")


if __name__ == "__main__":
    main()
