"""Benchmark `tracklog ingest` on a large access log, plain and gzipped.

Generates bench/out/access-<N>.log and its .gz copy once (reused afterwards), then ingests each
into a fresh database per run and prints wall time, throughput and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_log import DEFAULT_LINES, write_log, write_manifests
from measure import BENCH_SECRET, OUT, CommandFailed, print_table, run_tracklog


def log_files(lines: int) -> tuple[Path, Path]:
    """The plain log and its gzip copy, generated when missing."""
    plain = OUT / f"access-{lines}.log"
    gz = plain.with_name(plain.name + ".gz")
    if not plain.exists():
        print(f"generating {plain} ({lines:,} lines)...", file=sys.stderr)
        started = time.perf_counter()
        write_log(plain, lines, BENCH_SECRET.encode())
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not gz.exists():
        print(f"compressing {gz}...", file=sys.stderr)
        part = gz.with_name(gz.name + ".part")
        with (
            plain.open("rb") as src,
            part.open("wb") as raw,
            gzip.GzipFile(plain.name, "wb", 6, raw, mtime=0) as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        part.replace(gz)
    return plain, gz


def stored_hits(db: Path) -> str:
    """How many hits the run stored, as a sanity check that it did the work."""
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            row = con.execute("SELECT count(*) FROM hits").fetchone()
    except duckdb.Error as exc:
        return f"? ({exc})"
    return f"{row[0]:,}" if row else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="log lines (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per file (default: %(default)s)")
    parser.add_argument(
        "--no-manifests",
        action="store_true",
        help="ingest into an empty database (by default the 5 deliveries' manifests are loaded first, untimed)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="verify_signatures = false: the engine without the HMAC"
    )
    args = parser.parse_args()

    plain, gz = log_files(args.lines)
    manifests = [] if args.no_manifests else write_manifests(OUT / "manifests")
    uncompressed_mb = plain.stat().st_size / 1e6
    rows: list[list[str]] = []
    for path in (plain, gz):
        for run_no in range(1, args.repeat + 1):
            with tempfile.TemporaryDirectory(prefix="tracklog-bench-") as tmp:
                db = Path(tmp) / "bench.duckdb"
                if args.no_verify:
                    (Path(tmp) / "tracklog.toml").write_text("verify_signatures = false\n")
                print(f"ingesting {path.name} (run {run_no})...", file=sys.stderr)
                try:
                    if manifests:
                        manifest_args = [a for m in manifests for a in ("--manifest", str(m))]
                        run_tracklog(["--db", str(db), "--quiet", "ingest", *manifest_args], cwd=Path(tmp))
                    run = run_tracklog(["--db", str(db), "--quiet", "ingest", str(path)], cwd=Path(tmp))
                except CommandFailed as exc:
                    print(f"Error: {exc}", file=sys.stderr)
                    sys.exit(1)
                rows.append(
                    [
                        path.name,
                        f"{path.stat().st_size / 1e6:,.0f}",
                        f"{args.lines:,}",
                        str(run_no),
                        f"{run.wall_s:.2f}",
                        f"{run.cpu_s:.1f}",
                        f"{args.lines / run.wall_s:,.0f}",
                        f"{uncompressed_mb / run.wall_s:,.1f}",
                        f"{run.peak_rss_mb:,.0f}",
                        stored_hits(db),
                    ]
                )
    print(
        f"manifests: {'none' if not manifests else f'{len(manifests)} deliveries loaded first (untimed)'}; "
        f"signatures: {'not verified' if args.no_verify else 'verified'}"
    )
    print_table(
        ["file", "MB", "lines", "run", "wall s", "CPU s", "lines/s", "raw MB/s", "peak RSS MB", "hits"], rows
    )


if __name__ == "__main__":
    main()
