"""The same report on the same lake in both engines: DuckDB in-process and Spark (local mode).

Builds the generated database of _datasets.py with --hits hits (once, kept in --work), brings
it up to date, writes its lake with `tracklog export --lake`, then times `report deliveries`
(the all-time indicators: every hit of the lake resolved against the manifests, distinct
counts per delivery; or --report stats-by-browser):
- whole processes, `tracklog report ... --lake LAKE --engine E`, once each (cold: for Spark
  this includes starting the JVM);
- in one open session per engine, the report's query alone, median of --repeat.
Checks that both engines print what the database prints. Prints a Markdown table.

    python bench/bench_spark.py --hits 3000000 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _datasets
import duckdb

from tracklog import derived
from tracklog.engines import SparkOptions, open_lake
from tracklog.reports import delivery, stats
from tracklog.reports.common import Connection

REPORTS: dict[str, tuple[list[str], Callable[[Connection], object]]] = {
    "deliveries": (["report", "deliveries"], delivery.deliveries),
    "stats-by-browser": (["report", "stats", "--by", "browser"], lambda c: stats.breakdown(c, "browser")),
}


def tracklog(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tracklog", *args], check=True, capture_output=True, text=True, env=os.environ
    )
    return time.perf_counter() - start, done.stdout


def prepare(work: Path, hits: int) -> tuple[Path, Path]:
    db, lake = work / f"bench-{hits}.duckdb", work / f"lake-{hits}"
    work.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        t = time.perf_counter()
        _datasets.build(db, hits)
        print(f"built {db} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    with duckdb.connect(str(db)) as con:
        # the merge of hits stored straight into `hits`, without the writer's 300 MB cap (its
        # catch-up of 1M-hit batches runs out of memory on this data set)
        derived.sync(con)
    if not lake.exists():
        first = _datasets.FIRST_SEND.date()
        last = _datasets.last_hit_bound().date()
        t, _ = tracklog(
            "--db",
            str(db),
            "-q",
            "export",
            "--lake",
            "--out",
            str(lake),
            "--since",
            str(first),
            "--until",
            str(last),
        )
        print(f"exported {lake} in {t:.0f} s", file=sys.stderr)
    return db, lake


def warm(lake: Path, engine: str, report: Callable[[Connection], object], repeat: int) -> float:
    with open_lake(str(lake), engine, SparkOptions(master="local[*]")) as con:
        report(con)  # the first run plans and (Spark) compiles
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            report(con)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hits", type=int, default=3_000_000)
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "out" / "spark")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--report", choices=list(REPORTS), default="deliveries")
    args = parser.parse_args()
    db, lake = prepare(args.work, args.hits)
    size = sum(p.stat().st_size for p in lake.rglob("*.parquet"))
    print(f"lake: {args.hits:,} hits, {size / 1e6:.0f} MB of Parquet; load average {os.getloadavg()[0]:.1f}")
    print()
    print("| report | engine | whole process (cold) | query in a warm session (median) |")
    print("|---|---|---|---|")
    for name in [args.report]:
        cli_args, report = REPORTS[name]
        _, expected = tracklog("--db", str(db), *cli_args, "--format", "json")
        for engine in ("duckdb", "spark"):
            cold, out = tracklog(*cli_args, "--format", "json", "--lake", str(lake), "--engine", engine)
            if out != expected:
                raise SystemExit(f"{name} on {engine} differs from the database")
            query = warm(lake, engine, report, args.repeat)
            print(f"| {name} | {engine} | {cold:.1f} s | {query:.2f} s |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
