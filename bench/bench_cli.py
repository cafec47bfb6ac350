"""How snappy the command line is (python bench/bench_cli.py): `tracklog --help` and every report
against the bare floor `python -c "import duckdb; duckdb.connect(DB, read_only=True)"`.

Every figure is a new process, as a person or a cron job runs it (`python -m tracklog --db DB
... --format json`, `--format csv` and `--format table`), the floor run interleaved with them so a change in the
machine's load hits both. Printed per command: the median and the best wall time of --runs runs
and the median CPU seconds (user + system of the child); the best wall time against the floor's
best, and the CPU seconds against those of the floor run just before (the median of the --runs
ratios): on a shared machine whose load changes during the run, these are the figures that
hold still. The database is a COPY (never the original):
--db PATH copies that file to bench/out/ first; without it a database of --hits generated hits
(default 1,000,000; bench/_datasets.py) is built in bench/out/ and reused. tracklog's modules are
compiled to bytecode first, as an installed package's are: without it (PYTHONDONTWRITEBYTECODE
set, as where these figures were taken) every run would compile what it imports again, about 30 ms.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import OUT, REPO, print_table, tracklog_env

REPORTS = [
    ["report", "delivery", "D00"],
    ["report", "deliveries"],
    ["report", "hot-clicks", "--delivery", "D00"],
    ["report", "urls"],
    ["report", "streams", "--delivery", "D00"],
    ["report", "stats", "--delivery", "D00"],
    ["report", "stats"],
    ["report", "stats", "--by", "browser"],
    ["report", "stats", "--by", "domain"],
    ["recipient", "r0000001"],
    ["status"],
]


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `cmd` as a child process."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=tracklog_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return elapsed, usage.ru_utime + usage.ru_stime


def _figures(runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median wall, best wall, median CPU)."""
    return (
        statistics.median(w for w, _ in runs),
        min(w for w, _ in runs),
        statistics.median(c for _, c in runs),
    )


def database(args: argparse.Namespace) -> Path:
    OUT.mkdir(exist_ok=True)
    if args.db is not None:
        copy = OUT / f"cli-copy-{args.db.name}"
        if not copy.exists():
            shutil.copy(args.db, copy)  # reports may bring the derived tables up to date: a copy
        return copy
    db = OUT / f"cli-{args.hits}.duckdb"
    if not db.exists():
        from _datasets import build

        from tracklog import derived
        from tracklog.store import open_writer

        build(db, args.hits)
        with open_writer(db) as con:
            derived.sync(con)
    return db


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a database to copy and measure on")
    parser.add_argument("--hits", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    db = database(args)
    compileall.compile_dir(REPO / "tracklog", quiet=1)  # __pycache__, gitignored
    py = sys.executable
    floor_cmd = [py, "-c", f"import duckdb; duckdb.connect({str(db)!r}, read_only=True)"]
    tracklog = [py, "-m", "tracklog", "--db", str(db)]
    measure([*tracklog, "status"])  # once, untimed: brings the derived tables up to date if needed
    cases = [("tracklog --help", [py, "-m", "tracklog", "--help"])]
    for report in REPORTS:
        cases.append((" ".join(report) + " (json)", [*tracklog, *report, "--format", "json"]))
        if report != ["status"]:  # status prints JSON or a table, no CSV
            cases.append((" ".join(report) + " (csv)", [*tracklog, *report, "--format", "csv"]))
            cases.append((" ".join(report) + " (table)", [*tracklog, *report]))
    floors: list[tuple[float, float]] = []
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    paired: dict[str, list[float]] = {name: [] for name, _ in cases}  # CPU over the floor run just before
    for _ in range(args.runs):
        for name, cmd in cases:
            floors.append(measure(floor_cmd))
            times[name].append(measure(cmd))
            paired[name].append(times[name][-1][1] / floors[-1][1])
    f_med, f_best, f_cpu = _figures(floors)
    print(f"database: {db} ({db.stat().st_size / 1e6:,.0f} MB), {args.runs} runs each")
    print(f"floor (bare duckdb open): median {f_med:.3f} s, best {f_best:.3f} s, CPU {f_cpu:.3f} s")
    rows = []
    for name, runs in times.items():
        med, best, cpu = _figures(runs)
        ratio = statistics.median(paired[name])
        rows.append(
            [name, f"{med:.3f}", f"{best:.3f}", f"{best / f_best:.2f}x", f"{cpu:.3f}", f"{ratio:.2f}x"]
        )
    print_table(["command", "median s", "best s", "best/floor", "CPU s", "CPU/floor run"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
