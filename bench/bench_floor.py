"""What DuckDB alone does on this machine: the floor under any ingest built on it.

Times, on the ingest benchmark's log (bench/out/access-<N>.log), the primitives every ingest
needs whatever its design, each on its own:

  1. split the log into lines (DuckDB's CSV reader, one column): reading only;
  2. split each line into its combined-format fields (the CSV reader, space-separated, quoted);
  3. HMAC-SHA256 of each hit's path in SQL (two sha256 over BLOBs), the signature check;
  4. store the hits: an INSERT of the parsed hits from memory into the `hits` table of a fresh
     database file (DuckDB's column compression and writing); and, for comparison, the same
     rows written as a Parquet file by Arrow.

and prints each as a rate, then the end-to-end rate these three steps alone would allow if
everything else (routing, counting, quarantine, the report caches, the checkpoint) were free:
1 / (1/split + share/hmac + share/store), `share` being the hits per line. No tracklog code
runs except the hits DDL; the figures are DuckDB's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
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


def timed(
    con: duckdb.DuckDBPyConnection, sql: str, params: object = None, runs: int = 2
) -> tuple[float, float]:
    """Best (wall, CPU) seconds of `runs` executions (CPU: every thread of this process)."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        con.execute(sql, params).fetchall()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="log lines (default: %(default)s)")
    args = parser.parse_args()
    plain, _ = log_files(args.lines)
    log = str(plain).replace("'", "''")

    with tempfile.TemporaryDirectory(prefix="tracklog-floor-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "floor.duckdb"))
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
        lines = con.execute(f"SELECT count(*) FROM {lines_only}").fetchall()[0][0]
        split = timed(con, f"SELECT count(*) FROM {lines_only}")
        split_fields = timed(con, f"SELECT sum(hash({', '.join(names)})) FROM {fields}")

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
            con,
            f"SELECT count(*) FILTER (WHERE {sql_expected_sig('path', '$ipad', '$opad')} = '') FROM hit_rows",
            {"ipad": ipad, "opad": opad},
        )
        con.execute(hits_ddl("hits"))
        columns = ", ".join(HIT_COLUMNS)
        store = timed(con, f"INSERT INTO hits ({columns}) SELECT {columns} FROM hit_rows", runs=1)
        # For comparison, another storage: the same rows written as Parquet by Arrow.
        table = con.execute(f"SELECT {columns} FROM hit_rows").to_arrow_table()
        wall, cpu = time.perf_counter(), time.process_time()
        pq.write_table(table, Path(tmp) / "hits.parquet", compression="snappy")
        parquet = (time.perf_counter() - wall, time.process_time() - cpu)
        con.close()

    share = hits / lines
    rows = []
    for name, (wall, cpu), n, unit in (
        ("split into lines (CSV reader)", split, lines, "lines/s"),
        ("split into fields (CSV reader)", split_fields, lines, "lines/s"),
        ("HMAC-SHA256 of each hit's path (SQL)", hmac, hits, "hits/s"),
        ("store the hits (INSERT, compressed)", store, hits, "hits/s"),
        ("for comparison: the hits as Parquet (Arrow, snappy)", parquet, hits, "hits/s"),
    ):
        rows.append([name, f"{wall:.2f}", f"{cpu:.2f}", f"{n / wall:,.0f} {unit}"])
    bound = 1 / (1 / (lines / split_fields[0]) + share / (hits / hmac[0]) + share / (hits / store[0]))
    print(f"{lines:,} lines, {hits:,} hits ({share:.0%}); DuckDB {duckdb.__version__}")
    print_table(["step", "wall s", "CPU s", "rate"], rows)
    print(f"fields + HMAC + store alone, everything else free: at most {bound:,.0f} lines/s end to end")
    no_hmac = 1 / (1 / (lines / split_fields[0]) + share / (hits / store[0]))
    print(f"the same without the HMAC: at most {no_hmac:,.0f} lines/s")
    for label, rate in (("with", hits / hmac[0]), ("without", None)):
        steps = 1 / (lines / split_fields[0]) + share / (hits / parquet[0]) + (share / rate if rate else 0)
        print(f"with Parquet instead of the DuckDB table, {label} the HMAC: at most {1 / steps:,.0f} lines/s")


if __name__ == "__main__":
    main()
