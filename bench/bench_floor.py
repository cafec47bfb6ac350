"""The floor under any ingest of the benchmark log: reading its bytes, and decompressing the gzip copy.

On the files of bench_ingest.py (bench/out/access-<N>.log and .log.gz, generated when missing),
times what no ingest of them can skip, in this process, on one core, from the page cache (each
file is read once untimed first), in chunks of 64 MiB as tracklog reads them, best of --runs:

  - the plain file: read() of each chunk (a new bytes object each time, as tracklog does), and
    readinto() one reused buffer (no allocation: the bare copy out of the page cache); the same
    again counting the newlines (finding the lines, nothing more);
  - the gzip file: read and decompress with zlib (Python's gzip module), zlib-ng
    (`zlib_ng.gzip_ng`) and ISA-L (`isal.igzip`) when they are installed (the row of the one
    tracklog uses says so: zlib-ng when installed, else zlib); and for comparison
    `gzip -dc FILE > /dev/null`, the decompressor the GoAccess run of bench_ingest.py is piped
    from.

Each is printed as lines/s and MB/s of uncompressed log (wall time), and lines per CPU second
(steadier when the machine is busy). Then, unless --no-duckdb, a separate
section, "DuckDB's primitives": what DuckDB costs for the steps an ingest built on it could give
it (split lines and fields with its CSV reader, HMAC-SHA256 in SQL, a compressed INSERT into
`hits`, and for comparison Arrow writing the same hits as Parquet). Those are rates of DuckDB's
own operators, not a floor: tracklog's compiled parser does the parsing and the HMAC itself.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_ingest import log_files
from gen_log import DEFAULT_LINES
from measure import BENCH_SECRET, print_table

from tracklog.schema import HIT_COLUMNS, hits_ddl
from tracklog.signing import hmac_pads, sql_expected_sig

CHUNK = 64 << 20  # bytes per read (tracklog reads pieces of 8 MiB; the size changes little here)

# gzip readers: (row label, module with a gzip-compatible open(), the distribution to name its version)
GZIP_READERS = (
    ("zlib (Python's gzip module)", "gzip", None),
    ("zlib-ng (zlib_ng.gzip_ng)", "zlib_ng.gzip_ng", "zlib-ng"),
    ("ISA-L (isal.igzip)", "isal.igzip", "isal"),
)


def tracklog_gzip_module() -> str | None:
    """The module of the gzip reader tracklog uses here (zlib-ng when installed, else gzip)."""
    try:
        from tracklog.ingest.sources import GzipReader
    except ImportError:
        return None
    return GzipReader.__module__


def best_of(runs: int, work: Callable[[], object]) -> tuple[float, float]:
    """Best (wall, CPU) seconds of `runs` calls (CPU: every thread of this process)."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def read_chunks(path: Path, count: bool = False) -> int:
    """read() the file in chunks, a new bytes object each time; the newlines if `count`."""
    n = 0
    with path.open("rb", buffering=0) as f:
        while data := f.read(CHUNK):
            if count:
                n += data.count(b"\n")
    return n


def readinto_chunks(path: Path, count: bool = False) -> int:
    """readinto() one reused buffer: the copy out of the page cache and nothing else."""
    buf = bytearray(CHUNK)
    n = 0
    with path.open("rb", buffering=0) as f:
        while got := f.readinto(buf):
            if count:
                n += buf.count(b"\n", 0, got)
    return n


def gunzip_chunks(opener: Callable[..., object], path: Path) -> int:
    """Decompress the whole file through a gzip-compatible reader, in read(CHUNK) calls."""
    size = 0
    with opener(path, "rb") as f:  # type: ignore[attr-defined]
        while data := f.read(CHUNK):  # type: ignore[attr-defined]
            size += len(data)
    return size


def gzip_cli(path: Path) -> None:
    subprocess.run(["gzip", "-dc", str(path)], stdout=subprocess.DEVNULL, check=True)


def floor_rows(plain: Path, gz: Path, runs: int) -> tuple[list[list[str]], int]:
    """The floor table's rows, and the file's line count."""
    lines = read_chunks(plain, count=True)  # also brings the file into the page cache
    gzip_cli(gz)  # the same for the gzip file
    raw_mb = plain.stat().st_size / 1e6
    rows: list[list[str]] = []

    def row(name: str, timing: tuple[float, float]) -> None:
        wall, cpu = timing
        rows.append(
            [
                name,
                f"{wall:.2f}",
                f"{cpu:.2f}",
                f"{lines / wall:,.0f}",
                f"{raw_mb / wall:,.0f}",
                f"{lines / cpu:,.0f}",
            ]
        )

    row(f"{plain.name}: read(), 64 MiB chunks", best_of(runs, lambda: read_chunks(plain)))
    row(f"{plain.name}: readinto() one buffer", best_of(runs, lambda: readinto_chunks(plain)))
    row(f"{plain.name}: read() + count the newlines", best_of(runs, lambda: read_chunks(plain, count=True)))
    ours = tracklog_gzip_module()
    for label, module_name, dist in GZIP_READERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            rows.append([f"{gz.name}: {label}", "-", "-", "not installed", "", ""])
            continue
        if dist is not None:
            label += f" {importlib.metadata.version(dist)}"
        if module_name == ours:
            label += ", as tracklog"
        row(f"{gz.name}: {label}", best_of(runs, lambda m=module: gunzip_chunks(m.open, gz)))
    walls = []  # a child process: its CPU time is in os.times()'s children fields
    for _ in range(runs):
        started = time.perf_counter()
        before = os.times()
        gzip_cli(gz)
        after = os.times()
        walls.append(
            (
                time.perf_counter() - started,
                after.children_user + after.children_system - before.children_user - before.children_system,
            )
        )
    row(f"{gz.name}: `gzip -dc > /dev/null` (CLI)", min(walls))
    return rows, lines


def duckdb_primitives(plain: Path) -> tuple[list[list[str]], int, int]:
    """What DuckDB alone costs for the steps an ingest built on it would hand it: rows of
    (step, wall s, CPU s, rate), the lines and the hits."""
    log = str(plain).replace("'", "''")
    with tempfile.TemporaryDirectory(prefix="tracklog-primitives-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "primitives.duckdb"))
        con.execute("SET enable_progress_bar = false")
        lines_only = (
            f"read_csv('{log}', columns = {{'line': 'VARCHAR'}}, delim = '\x01', quote = '', escape = '', "
            "header = false, auto_detect = false)"
        )
        names = [f"c{i}" for i in range(10)]
        typed = ", ".join(f"'{n}': 'VARCHAR'" for n in names)
        fields = (
            f"read_csv('{log}', columns = {{{typed}}}, delim = ' ', quote = '\"', escape = '', header = false, "
            "auto_detect = false, strict_mode = false, ignore_errors = true)"
        )

        def timed(sql: str, params: object = None, runs: int = 2) -> tuple[float, float]:
            return best_of(runs, lambda: con.execute(sql, params).fetchall())

        lines = con.execute(f"SELECT count(*) FROM {lines_only}").fetchall()[0][0]
        split = timed(f"SELECT count(*) FROM {lines_only}")
        split_fields = timed(f"SELECT sum(hash({', '.join(names)})) FROM {fields}")

        # The hits, parsed just enough to have each column's real values (in memory).
        con.execute(f"""
CREATE TEMP TABLE parsed AS
SELECT c0 AS ip, strptime(c3 || ' ' || c4, '[%d/%b/%Y:%H:%M:%S %z]')::TIMESTAMP AS ts,
    split_part(c5, ' ', 1) AS method, split_part(c5, ' ', 2) AS target,
    try_cast(c6 AS SMALLINT) AS status, try_cast(c7 AS BIGINT) AS bytes,
    nullif(c8, '-') AS referer, nullif(c9, '-') AS user_agent
FROM {fields}""")
        con.execute("""
CREATE TEMP TABLE hit_rows AS
SELECT 1 AS source_id, row_number() OVER () AS line_no, 0 AS byte_offset, ts, ip, method,
    split_part(target, '?', 2) AS query, status, bytes, referer, user_agent, NULL AS uid, NULL AS extra,
    CASE split_part(target, '/', 2) WHEN 'o' THEN 'open' WHEN 'c' THEN 'click' WHEN 'm' THEN 'mirror'
        ELSE 'unsubscribe' END AS kind,
    split_part(target, '/', 3) AS delivery_id,
    CASE WHEN split_part(target, '/', 2) = 'c' THEN split_part(target, '/', 4) END AS link_id,
    split_part(split_part(target, '?', 1), '/', -1) AS recipient_id, 'valid' AS sig_status,
    split_part(target, '?', 1) AS path
FROM parsed WHERE regexp_matches(target, '^/[ocmu]/')""")
        hits = con.execute("SELECT count(*) FROM hit_rows").fetchall()[0][0]
        ipad, opad = hmac_pads(BENCH_SECRET.encode())
        hmac = timed(
            f"SELECT count(*) FILTER (WHERE {sql_expected_sig('path', '$ipad', '$opad')} = '') FROM hit_rows",
            {"ipad": ipad, "opad": opad},
        )
        con.execute(hits_ddl("hits"))
        columns = ", ".join(HIT_COLUMNS)
        store = timed(f"INSERT INTO hits ({columns}) SELECT {columns} FROM hit_rows", runs=1)
        # For comparison, another storage: the same rows written as Parquet by Arrow.
        table = con.sql(f"SELECT {columns} FROM hit_rows").to_arrow_table()
        parquet = best_of(1, lambda: pq.write_table(table, Path(tmp) / "hits.parquet", compression="snappy"))
        con.close()

    rows = []
    for name, (wall, cpu), n, unit in (
        ("split into lines (CSV reader, one column)", split, lines, "lines/s"),
        ("split into the combined fields (CSV reader)", split_fields, lines, "lines/s"),
        ("HMAC-SHA256 of each hit's path (SQL, two sha256)", hmac, hits, "hits/s"),
        ("store the hits (INSERT into `hits`, compressed)", store, hits, "hits/s"),
        ("for comparison: the hits as Parquet (Arrow, snappy)", parquet, hits, "hits/s"),
    ):
        rows.append([name, f"{wall:.2f}", f"{cpu:.2f}", f"{n / wall:,.0f} {unit}"])
    return rows, lines, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="log lines (default: %(default)s)")
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each read, the best kept (default: %(default)s)"
    )
    parser.add_argument(
        "--no-duckdb", action="store_true", help="the floor only, without DuckDB's primitives"
    )
    args = parser.parse_args()
    plain, gz = log_files(args.lines)

    rows, lines = floor_rows(plain, gz, args.runs)
    print(
        f"The floor: {lines:,} lines, {plain.stat().st_size / 1e6:,.0f} MB plain, {gz.stat().st_size / 1e6:,.0f} MB "
        f"gzipped; one core, page cache warm, best of {args.runs}; load average {os.getloadavg()[0]:.1f}"
    )
    print_table(["read", "wall s", "CPU s", "lines/s", "raw MB/s", "lines per CPU s"], rows)
    if args.no_duckdb:
        return

    rows, lines, hits = duckdb_primitives(plain)
    print(
        f"\nDuckDB's primitives (not a floor: DuckDB's own operators, {os.cpu_count()} threads): "
        f"{lines:,} lines, {hits:,} hits ({hits / lines:.0%}); DuckDB {duckdb.__version__}"
    )
    print_table(["step", "wall s", "CPU s", "rate"], rows)


if __name__ == "__main__":
    main()
